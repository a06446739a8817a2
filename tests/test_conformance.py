"""The conformance suite: every built-in solver passes it, every fixture fails it for the right reason."""

import io
import math
import re

import pytest
import torch

import flowsolve
import flowsolve.conformance as conformance
from flowsolve.conformance import convergence
from flowsolve.conformance.check import Status
from flowsolve.conformance.plan import plan
from flowsolve.conformance.profiles import DEFAULT, EFFORTS, QUICK
from flowsolve.conformance.subject import from_object, resolve
from flowsolve.plugins.registry import UnknownNameError

pytest_plugins = ["pytester"]

BUILTIN_BASE_SOLVERS = ["euler", "midpoint", "heun", "rk3", "rk4", "rk38"]
BUILTIN_TRANSFORMS = ["scale-time", "time-only", "scale-only"]
FIXTURES = "flowsolve.conformance.fixtures"


def fitted(figure: str, versus: str) -> float:
    """The order in ``"fitted order 1.01 vs declared 2 ..."``."""
    match = re.match(rf"fitted order (-?[\d.]+|nan|inf) {versus}", figure)
    assert match, figure
    return float(match.group(1))


def outcomes(subject, effort=QUICK, only=None):
    """``{check id: Outcome}`` for the subject's checks (those whose id starts with ``only``)."""
    checks = [c for c in plan(subject, effort) if only is None or c.id.startswith(only)]
    return {check.id: check.run() for check in checks}


# -- the built-in solvers and the torchdiffeq plugin pass ------------------------------------------
@pytest.mark.parametrize("name", BUILTIN_BASE_SOLVERS + BUILTIN_TRANSFORMS)
def test_builtin_solver_passes_the_suite(name, capsys):
    assert conformance.main([name]) == 0
    report = capsys.readouterr().out
    lines = [line for line in report.splitlines() if line.startswith("  PASS") or line.startswith("  FAIL")]
    assert lines and all(line.startswith("  PASS") for line in lines), report
    if name in BUILTIN_BASE_SOLVERS:
        declared = flowsolve.registry.base_solver(name).order
        assert len(re.findall(rf"fitted order \d\.\d\d vs declared {declared}\b", report)) == 5, report


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_torchdiffeq_plugin_solver_passes_the_suite(method, capsys):
    pytest.importorskip("flowsolve_torchdiffeq")
    flowsolve.registry.reset()
    try:
        assert conformance.main([f"torchdiffeq-{method}", "--quick"]) == 0, capsys.readouterr().out
    finally:
        flowsolve.registry.reset()


@pytest.mark.parametrize("name", ["ab2", "ab3"])
def test_multistep_bases_pass_with_their_own_algebra_and_no_one_step_constant(name):
    results = outcomes(resolve(name))
    assert results[f"multistep[{name}]"].status is Status.PASS
    assert not any(check.startswith("tableau[") for check in results)
    assert results[f"lipschitz[scale-time+{name}]"].status is Status.SKIP
    failed = {k: v.figure for k, v in results.items() if v.status is Status.FAIL}
    assert not failed and results[f"rmse-bound[scale-time+{name}]"].status is Status.PASS


def test_a_non_stationary_family_reports_order_consistency_as_not_declared():
    results = outcomes(resolve("non-stationary"))
    (consistency,) = [v for k, v in results.items() if k.startswith("order-consistency[")]
    assert consistency.status is Status.SKIP and "not declared" in consistency.figure
    assert {k.split("[")[0] for k, v in results.items() if v.status is Status.PASS} == {
        "start", "shape-dtype-device", "field-calls", "determinism", "gradients"}


def test_a_non_stationary_start_that_is_not_its_base_fails():
    class Shifted(flowsolve.NonStationary):
        def at(self, nfe):
            solver = super().at(nfe)
            with torch.no_grad():
                solver.params["times"].add_(0.01)
            return solver

    results = outcomes(from_object(Shifted(), "shifted"), only="start[")
    (outcome,) = results.values()
    assert outcome.status is Status.FAIL and "differs from midpoint" in outcome.figure


# -- the fixtures fail, with the right diagnosis ---------------------------------------------------
def test_midpoint_with_wrong_c_fails_on_structure_and_on_time_dependent_problems():
    found = outcomes(resolve(f"{FIXTURES}:wrong_c_midpoint"))
    assert found["tableau[structure]"].status is Status.FAIL
    assert "row 1 of A sums to 1/2 but c[1] = 1" in found["tableau[structure]"].figure
    for problem in ("cosine-growth", "varying-logistic", "gaussian-mixture"):
        outcome = found[f"order[{problem}]"]
        assert outcome.status is Status.FAIL and fitted(outcome.figure, "vs declared 2") == pytest.approx(1, abs=0.1)
    # On autonomous problems the stage time is never read: order 2 there, as the criterion allows.
    assert found["order[linear-system]"].status is found["order[logistic]"].status is Status.PASS
    consistency = found["consistency[scale-time+midpoint-wrong-c]"].figure
    assert fitted(consistency, "vs base order 2") == pytest.approx(1, abs=0.1)


def test_rk4_with_a_wrong_weight_fails_algebra_and_every_order_check():
    found = outcomes(resolve(f"{FIXTURES}:rk4_wrong_weight"))
    assert found["tableau[order-conditions]"].status is Status.FAIL
    assert "hold only through order 0, declared 4" in found["tableau[order-conditions]"].figure
    assert "b.Phi = 5/6" in found["tableau[order-conditions]"].figure
    for problem in ("linear-system", "logistic", "cosine-growth", "varying-logistic", "gaussian-mixture"):
        outcome = found[f"order[{problem}]"]
        assert outcome.status is Status.FAIL and fitted(outcome.figure, "vs declared 4") == pytest.approx(0, abs=0.1)


def test_transform_breaking_s0_fails_boundary_identity_and_consistency():
    found = outcomes(resolve(f"{FIXTURES}:InitialScaleNotOne"))
    assert found["boundary[initial-scale-not-one]"].status is Status.FAIL
    assert found["boundary[initial-scale-not-one]"].figure.startswith("s_0 = 1.3, must be 1")
    for base in ("midpoint", "euler"):
        identity = found[f"identity[initial-scale-not-one+{base}]"]
        assert identity.status is Status.FAIL and f"differs from {base} by" in identity.figure
        consistency = found[f"consistency[initial-scale-not-one+{base}]"].figure
        assert fitted(consistency, "vs base order") == pytest.approx(0, abs=0.1)


class ScaleNotPositive(flowsolve.ScaleTime):
    """``s = 1 + theta`` instead of ``exp(theta)``: fine at identity, negative for some parameters."""

    name = "scale-not-positive"

    def values(self, params, grid):
        values = super().values(params, grid)
        return values._replace(s=torch.cat([values.s[:1], 1 + params["log_scale"]]))


def test_boundary_violation_away_from_identity_is_found_by_drawing_parameters():
    found = outcomes(from_object(ScaleNotPositive, "ScaleNotPositive"), only="boundary")
    outcome = found["boundary[scale-not-positive]"]
    assert outcome.status is Status.FAIL and re.match(r"s\[\d+\] = -[\d.]+, must be > 0", outcome.figure), outcome


def test_under_declared_order_fails_the_sharpness_criterion():
    tableau = flowsolve.RK4.tableau
    rk4_as_two = flowsolve.BaseSolver(flowsolve.ButcherTableau("rk4-as-2", tableau.a, tableau.b, tableau.c, order=2))
    found = outcomes(from_object(rk4_as_two, "rk4-as-2"), effort=DEFAULT, only="order[varying-logistic]")
    assert re.match(r"fitted order 3\.\d\d or more on every drawn varying-logistic problem vs declared 2",
                    found["order[varying-logistic]"].figure)
    found = outcomes(from_object(rk4_as_two, "rk4-as-2"), only="tableau")
    assert "hold through order 4 but the tableau declares 2" in found["tableau[order-conditions]"].figure


def test_implicit_tableau_fails_structure():
    implicit = flowsolve.ButcherTableau.unchecked("implicit-euler", a=[[1]], b=[1], c=[1], order=1)
    found = outcomes(from_object(implicit, "implicit-euler"), only="tableau[structure]")
    assert "A[0][0] = 1 is on or above the diagonal" in found["tableau[structure]"].figure


def test_transform_without_inverse_skips_consistency_with_the_reason():
    class NoInverse(flowsolve.ScaleTime):
        name = "no-inverse"
        parameters_for = flowsolve.Transform.parameters_for

    found = outcomes(from_object(NoInverse(), "NoInverse"), only="consistency[no-inverse+euler]")
    outcome = found["consistency[no-inverse+euler]"]
    assert outcome.status is Status.SKIP and "cannot be set from a continuous transform" in outcome.figure


# -- naming what to check ---------------------------------------------------------------------------
def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownNameError, match=r"unknown solver 'rk5'.*'midpoint'.*'scale-time'"):
        resolve("rk5")


@pytest.mark.parametrize("spec, kind", [
    ("flowsolve.methods.runge_kutta:MIDPOINT", "base solver"),  # a tableau
    ("flowsolve:RK4", "base solver"),  # a BaseSolver class
    ("flowsolve:ScaleOnly", "transform"),  # a Transform class
    (f"{FIXTURES}:wrong_c_midpoint", "base solver"),  # a BaseSolver instance
])
def test_module_object_resolves_every_accepted_kind(spec, kind):
    assert resolve(spec).kind == kind


def test_a_family_gets_its_base_checks_and_its_own_pairing():
    ids = [c.id for c in plan(from_object(flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Heun()), "family"))]
    assert "tableau[order-conditions]" in ids and "boundary[time-only]" in ids and "gradients[time-only+heun]" in ids
    assert not any("scale-time" in i for i in ids)


def test_other_objects_are_refused_naming_what_is_accepted():
    with pytest.raises(TypeError, match="the conformance suite takes a flowsolve.BaseSolver"):
        resolve("flowsolve:compose")


def test_cli_usage_errors_exit_2(capsys):
    assert conformance.main(["rk5"]) == 2
    assert "unknown solver 'rk5'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert conformance.main(["euler", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_cli_exit_code_is_1_when_a_check_fails(capsys):
    assert conformance.main([f"{FIXTURES}:rk4_wrong_weight", "--quick"]) == 1
    assert re.search(r"FAIL  tableau\[order-conditions\] +order conditions hold only through order 0",
                     capsys.readouterr().out)


def test_parser_can_extend_a_subcommand():
    import argparse

    commands = argparse.ArgumentParser(prog="flowsolve").add_subparsers(dest="command")
    conformance.build_parser(commands.add_parser("conformance")).set_defaults(run=conformance.execute)
    args = commands._name_parser_map["conformance"].parse_args(["midpoint", "--quick", "--device", "cpu"])
    assert (args.solvers, args.effort, args.device) == (["midpoint"], "quick", "cpu")


# -- the pytest plugin ------------------------------------------------------------------------------
def test_pytest_plugin_collects_one_item_per_check(pytester):
    result = pytester.runpytest(f"--flowsolve-solver={FIXTURES}:InitialScaleNotOne", "--flowsolve-quick",
                                "-k", "boundary or identity", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*flowsolve-conformance*InitialScaleNotOne*boundary*initial-scale-not-one*",
        "*s_0 = 1.3, must be 1*",
        "*= flowsolve conformance =*",
    ])


def test_pytest_plugin_passes_a_good_solver_and_reports_figures(pytester):
    result = pytester.runpytest("--flowsolve-solver=rk3", "-k", "tableau or order", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["flowsolve-conformance[[]rk3[]]",
                                 "*PASS  order[[]gaussian-mixture[]]*fitted order *vs declared 3*"])


def test_pytest_plugin_is_inert_without_the_option(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "flowsolve conformance" not in result.stdout.str()


def test_pytest_plugin_turns_an_unknown_name_into_a_usage_error(pytester):
    result = pytester.runpytest("--flowsolve-solver=rk5", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown solver 'rk5'*registered base solvers*"])


# -- pieces -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1.0, 2.0, 4.0])
def test_fitted_order_recovers_a_clean_power_law(order):
    fit = convergence.fitted_order(lambda n: 3.0 * n**-order, floor=1e-12)
    assert fit.order == pytest.approx(order, abs=1e-9)
    assert fit.steps[-1] == convergence.SETTLED_FROM  # settled at once


def test_fitted_order_waits_for_the_asymptotic_regime_and_stops_at_the_floor():
    # Order 2 with a small leading coefficient: the error first falls like n^-4.
    late = convergence.fitted_order(lambda n: 1e-3 * n**-2.0 + n**-4.0, floor=1e-15)
    assert late.order == pytest.approx(2.0, abs=0.1) and late.steps[-1] > convergence.SETTLED_FROM
    floored = convergence.fitted_order(lambda n: n**-6.0, floor=1e-9)
    assert floored.errors[-1] < 1e-9 and floored.order == pytest.approx(6.0, abs=1e-9)
    assert math.isnan(convergence.fitted_order(lambda n: float("nan"), floor=1e-12).order)


def test_profiles_are_registered_derandomized_without_deadline():
    import hypothesis

    for effort in EFFORTS.values():
        profile = hypothesis.settings.get_profile(effort.profile)
        assert profile.deadline is None
        assert profile.derandomize is (effort is not EFFORTS["thorough"])


def test_every_name_in_all_resolves():
    for name in conformance.__all__:
        assert getattr(conformance, name) is not None, name


def test_report_lists_every_check_with_its_verdict():
    subject = resolve("euler")
    checks = [c for c in plan(subject) if c.id.startswith("tableau")]
    out = io.StringIO()
    results = conformance.run_checks(subject, checks, out=out)
    assert [r.outcome.status for r in results] == [Status.PASS, Status.PASS]
    assert "2 checks: 2 passed, 0 failed, 0 skipped" in out.getvalue()

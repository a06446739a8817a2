"""The contracts parts of a solver declare (abstract base classes), and how each part is stored."""

from __future__ import annotations

import pytest
import torch

import flowsolve
from flowsolve.methods.adams import AdamsBashforth
from flowsolve.methods.base import BaseMethod
from flowsolve.solvers.family import ParametricFamily
from flowsolve.solvers.family_base import Family
from flowsolve.solvers.module import SolverModule


def test_a_tableau_that_is_not_a_butcher_tableau_is_refused_when_the_class_is_defined():
    with pytest.raises(TypeError, match="Broken.tableau must be a ButcherTableau"):
        class Broken(flowsolve.BaseSolver):
            tableau = "midpoint"


def test_adams_bashforth_is_a_base_method_without_a_tableau():
    ab2 = flowsolve.AdamsBashforth(2)
    assert isinstance(ab2, BaseMethod) and not isinstance(ab2, flowsolve.BaseSolver)
    assert (ab2.name, ab2.order, ab2.history, ab2.evaluations(5)) == ("ab2", 2, 1, 5)
    assert flowsolve.AdamsBashforth is AdamsBashforth  # the public name, now from flowsolve.methods.adams


@pytest.mark.parametrize("order", [1, 2, 3])
def test_adams_bashforth_sample_is_its_identity_parametric_solver(order):
    ab = flowsolve.AdamsBashforth(order)
    x0 = torch.randn(4, 3, dtype=torch.float64)

    def field(t, x):
        return torch.sin(3 * t) * x - 0.5 * torch.tanh(x)

    solver = flowsolve.compose(flowsolve.ScaleTime(), ab).at(nfe=7)
    torch.testing.assert_close(ab.sample(field, x0, 7), solver.sample(field, x0), rtol=0, atol=1e-15)


def test_a_transform_declares_what_it_learns_with_one_default():
    assert (flowsolve.Transform.learns_time, flowsolve.Transform.learns_scale) == (True, True)
    assert (flowsolve.TimeOnly.learns_time, flowsolve.TimeOnly.learns_scale) == (True, False)
    assert (flowsolve.ScaleOnly.learns_time, flowsolve.ScaleOnly.learns_scale) == (False, True)


def test_a_solver_module_must_declare_whether_it_has_local_steps():
    with pytest.raises(TypeError, match="has_local_steps"):
        class Undeclared(SolverModule):
            pass


def test_families_declare_local_steps_and_conformance_checks():
    family = flowsolve.compose(flowsolve.ScaleTime(), flowsolve.Midpoint())
    assert isinstance(family, Family) and isinstance(flowsolve.NonStationary(), Family)
    assert family.has_local_steps and not flowsolve.NonStationary.has_local_steps
    assert "parametric" in ParametricFamily.conformance_checks
    assert "start" in flowsolve.NonStationary.conformance_checks
    assert "step-lipschitz" in flowsolve.Midpoint.conformance_checks
    assert "step-lipschitz" not in flowsolve.AdamsBashforth.conformance_checks


@pytest.mark.parametrize("part", [flowsolve.ScaleTime(), flowsolve.Midpoint(), flowsolve.AdamsBashforth(3),
                                  flowsolve.RMSEBound(L_tau=2.0), flowsolve.NonStationary(),
                                  flowsolve.compose(flowsolve.TimeOnly(), flowsolve.Heun())], ids=repr)
def test_every_part_round_trips_through_its_spec(part):
    spec = part.to_spec()
    assert set(spec) == {"kind", "name", "options"}
    options = {key: type(getattr(part, key)).from_spec(value["name"], value["options"])
               if isinstance(value, dict) and "kind" in value else value for key, value in spec["options"].items()}
    assert type(part).from_spec(spec["name"], options) == part


def test_the_lipschitz_algebra_has_one_home():
    from flowsolve.core import lipschitz
    from flowsolve.training import losses

    assert losses.amplification is lipschitz.amplification

import flowsolve.cli


def test_demo_fits_a_solver_that_beats_midpoint(capsys):
    assert flowsolve.cli.main(["demo", "--nfe", "6", "--iterations", "60", "--quiet"]) == 0
    rows = {line[:40].strip(): line.split() for line in capsys.readouterr().out.splitlines() if " 6 " in line}
    bespoke = next(v for k, v in rows.items() if k.startswith("bespoke"))
    assert float(bespoke[-2]) < float(rows["midpoint"][-2])

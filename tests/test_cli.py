import flowsolve.cli


def test_demo_prints_a_table_where_more_nfe_is_more_accurate(capsys):
    assert flowsolve.cli.main(["demo", "--samples", "16"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("midpoint")]
    errors = [float(row[2]) for row in rows]
    assert len(errors) == 3 and errors[0] > errors[1] > errors[2]

"""pytest plugin of the conformance suite: ``pytest --flowsolve-solver=NAME_OR_module:object``."""


def pytest_addoption(parser):
    group = parser.getgroup("flowsolve", "flowsolve conformance")
    group.addoption("--flowsolve-solver", action="append", default=[], metavar="NAME_OR_module:object",
                    help="run the flowsolve conformance suite against this solver (repeatable)")
    group.addoption("--flowsolve-device", default="cpu", help="device for the conformance checks (cpu, cuda)")

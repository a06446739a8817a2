"""Stopgap: library functions that report bad user input with a built-in exception.

:func:`flowsolve.cli.main` reports a :class:`~flowsolve.core.errors.FlowsolveError` as a message and
lets every other exception through with its traceback, so that a bug shows where it happened. The
functions below still raise a plain ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` for input
a command-line user gives (an NFE, a loss, ``--init``, ``--checkpoint``, a solver file, a
``module:object`` model). Until they raise FlowsolveErrors, such an exception raised *directly* by
one of them (its innermost frame is theirs) is reported as a message too; one raised deeper, in
torch or in code they call, is not. Delete an entry once its function raises a FlowsolveError, and
this module with the last one.
"""

from __future__ import annotations

from flowsolve.core.errors import FlowsolveError, FlowsolveValueError

BUILTIN_ERRORS = (ValueError, TypeError, FileNotFoundError)

# Qualified names of flowsolve functions (matched in any flowsolve module, so that moving one
# between modules keeps it listed) -> the user input they judge.
USER_INPUT_RAISE_SITES: dict[str, str] = {
    "BaseSolver.n_steps": "--nfe that is not a whole number of steps of --base",
    "AdamsBashforth.n_steps": "--nfe too small for a multistep --base",
    "NonStationarySolver.__init__": "--nfe of a non-stationary family",
    "read_solver_file": "a solver file path with no file",
    "load": "a solver file path with no file",
    "fit": "--batch-size not a multiple of the torchrun processes",
    "_resolve_loss": "a --loss the family cannot use",
    "_read_checkpoint": "a --checkpoint that is not a fit checkpoint",
    "_resume": "a --checkpoint of a fit with other settings",
    "ParametricSolver.initialise_from": "an --init solver file of another family",
    "NonStationarySolver.initialise": "an --init solver file of another NFE",
    "_as_method": "an --init baseline or base solver that cannot start a non-stationary solver",
    "schedule_time": "an --init schedule name",
    "start_from_schedule": "an --init schedule the model or transform cannot use",
    "TrajectoryStore.__init__": "a model without a sample shape",
    "image_grid": "samples that cannot be shown as square images in a .png",
    "network": "a bundled model whose weights are missing",
    "Adapter.__init__": "a module:object network that --kind cannot adapt",
    "Adapter.network": "a module:object network returning the wrong shape",
    "_call_grouped": "a module:object field that cannot take per-sample times",
    "_check_output": "a module:object field returning the wrong type, shape or dtype",
}


def as_user_input_error(error: BaseException) -> FlowsolveError | None:
    """``error`` as a :class:`FlowsolveValueError` with its message if a listed flowsolve function
    raised it itself, else ``None`` (the caller re-raises ``error``)."""
    if not isinstance(error, BUILTIN_ERRORS) or error.__traceback__ is None:
        return None
    innermost = error.__traceback__
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    frame = innermost.tb_frame
    function = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)  # co_qualname: Python >= 3.11
    module = str(frame.f_globals.get("__name__", ""))
    if not module.startswith("flowsolve.") or module.startswith("flowsolve.cli"):
        return None
    # Python 3.10 has no co_qualname: compare the function's own name there.
    if function in USER_INPUT_RAISE_SITES or any(site.rpartition(".")[2] == function
                                                  for site in USER_INPUT_RAISE_SITES if "." in site):
        converted = FlowsolveValueError(str(error))
        converted.__cause__ = error
        return converted
    return None

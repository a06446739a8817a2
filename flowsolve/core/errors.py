"""flowsolve's own error base class: every error flowsolve raises on purpose derives from it.

The command line catches :class:`FlowsolveError` only, so a bug (any other exception) keeps its
traceback. Each subclass also derives from the built-in exception a caller would expect
(``ValueError`` for bad input, ``FloatingPointError`` for non-finite numbers).
"""


class FlowsolveError(Exception):
    """Base class of the errors flowsolve raises on purpose (bad input, files, plugins, models)."""


class FlowsolveValueError(FlowsolveError, ValueError):
    """A value given to flowsolve (an argument, an option, a file's content) that it cannot use."""


class FlowsolveTypeError(FlowsolveError, TypeError):
    """An object given to flowsolve of a kind it cannot use (a model, a part, an option's type)."""


class FlowsolveFileNotFoundError(FlowsolveError, FileNotFoundError):
    """A file flowsolve was asked to read (a solver file, bundled weights) is not there."""


class FitDivergedError(FlowsolveError, FloatingPointError):
    """Training drove the solver's parameters, loss or gradients to non-finite values."""

"""The error the command line raises about its own options."""

from flowsolve.core.errors import FlowsolveValueError


class CommandLineError(FlowsolveValueError):
    """Options that cannot be used together, or a model or solver file that does not fit them.

    :func:`flowsolve.cli.main` reports it as ``flowsolve <command>: error: <message>`` (exit status 1).
    """

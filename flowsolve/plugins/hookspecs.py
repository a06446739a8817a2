"""The hooks a flowsolve plugin can implement.

A plugin is a module (or object) with functions marked ``@flowsolve.hookimpl``, registered
through the ``flowsolve`` entry-point group::

    [project.entry-points.flowsolve]
    myplugin = "my_package.flowsolve_plugin"

Every hook is called with keyword arguments only; hookspecs only ever gain optional arguments.

Names are never taken over silently (see :mod:`flowsolve.registry`): a name the built-ins
provide stays the built-in's unless the plugin declares the replacement in
:func:`flowsolve_overrides`, and a name two plugins provide is refused, naming both. A hook
that raises is reported against its plugin without breaking the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the hooks' types only: plugins import this module before anything heavy
    from flowsolve.baselines import Baseline

PROJECT = "flowsolve"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def flowsolve_model_adapters():
    """Model adapters this plugin provides.

    :return: a mapping ``{kind: factory}``; ``factory(model, **options)`` returns a velocity
        field ``u(t, x)`` in flowsolve's convention (t = 0 noise, t = 1 data).
    """


@hookspec(firstresult=True)
def flowsolve_detect_adapter(model):
    """Recognise a model object and name the adapter kind that handles it.

    :param model: the object a user passed to ``flowsolve.adapt(model)`` without a kind.
    :return: ``(kind, options)`` if this plugin handles ``model``, else ``None``.
    """


@hookspec
def flowsolve_base_solvers():
    """Base solvers this plugin provides.

    :return: a mapping ``{name: factory}``; ``factory()`` returns a :class:`flowsolve.BaseSolver`
        whose ``name`` is ``name``.

    A solver file stores ``base.to_dict()``; :func:`flowsolve.load` looks its ``name`` up here and
    rebuilds the base as ``factory.from_dict(stored)`` when the factory (e.g. the class) has a
    ``from_dict``, else as ``factory()``. The rebuilt base must describe itself (``to_dict()``)
    as stored, so a base with options beyond its name (anything ``to_dict`` adds) needs a
    ``from_dict``; a plain tableau of an unregistered name loads as a :class:`flowsolve.BaseSolver`.
    """


@hookspec
def flowsolve_transforms():
    """Transforms this plugin provides.

    :return: a mapping ``{name: Transform subclass}``; the name is what solver files store.

    :func:`flowsolve.load` rebuilds a transform as ``cls.from_dict(options)`` if the class has one,
    else as ``cls(**options)``, ``options`` being ``to_dict()`` less ``name``.
    """


@hookspec
def flowsolve_solver_families():
    """Solver families other than transform x base solver (those come from the two hooks above).

    :return: a mapping ``{name: family class}``, each a subclass of
        :class:`flowsolve.solvers.family_base.Family` whose ``name`` is ``name`` (what solver files
        store). The class is called with keyword arguments only: ``family()`` (the conformance
        suite) and ``family(base=base_solver)`` (``flowsolve fit --family NAME --base BASE``), so
        it takes an optional ``base`` (the method it starts from). An instance has
        ``at(nfe, init=None, model=None)``, ``fit(model, nfe, **options)``, ``new_solver(nfe)``,
        ``label``, ``to_dict()``, ``to_spec()`` / ``from_spec(name, options)`` (how
        :func:`flowsolve.load` rebuilds it) and the class variables ``has_local_steps`` and
        ``conformance_checks``.
    """


@hookspec
def flowsolve_losses():
    """Training losses this plugin provides.

    :return: a mapping ``{name: Loss subclass}``.
    """


@hookspec
def flowsolve_models():
    """Ready-to-sample models this plugin provides, by name (e.g. ``"digits-fm-ot"``).

    :return: a mapping ``{name: factory}``; ``factory()`` returns a velocity field ``u(t, x)``
        (t = 0 noise, t = 1 data) with a ``sample_shape`` attribute.
    """


@hookspec
def flowsolve_baselines() -> Mapping[str, Callable[[], Baseline]]:
    """Training-free baselines this plugin provides: reports (``flowsolve eval``,
    :func:`flowsolve.training.evaluation.compare`) compare learned solvers with every registered one.

    :return: a mapping ``{name: factory}``; ``factory()`` returns a
        :class:`flowsolve.baselines.Baseline` whose ``name`` is ``name``.
    """
    return {}  # never runs: pluggy calls the plugins' implementations, the spec only names the hook


@hookspec
def flowsolve_overrides():
    """Built-in names this plugin means to replace with its own.

    Without this declaration, an entry with a built-in's name (``midpoint``, ``scale-time``,
    ``fm-ot``, ...) is ignored with a warning. A declared replacement is used instead of the
    built-in and listed by ``flowsolve plugins``; two plugins replacing the same built-in are
    both refused (the built-in is kept). It does not settle clashes between plugins.

    :return: a mapping ``{kind: [names]}``, kind one of ``"base solver"``, ``"transform"``,
        ``"loss"``, ``"model adapter"``, ``"model"``, ``"solver family"``, ``"baseline"``; e.g.
        ``{"base solver": ["midpoint"]}``.
    """

"""The plugin registry: pluggy, fed by the ``flowsolve`` entry-point group.

Built-in solvers, transforms, losses, adapters and baselines are registered through the same entry
point a third-party package uses. ``FLOWSOLVE_DISABLE_PLUGINS=name1,name2`` skips named plugins.

What every plugin provides is collected once, when the registry is built, under these rules:

* A plugin that fails to import, or whose hook raises or returns something other than a
  mapping, is reported by name (a warning, and the error on its :class:`PluginRecord`);
  the other plugins, and the plugin's other hooks, keep working.
* Built-in names are never replaced silently. A plugin offering a name the built-ins already
  provide is reported and that entry ignored, unless the plugin declares the replacement in
  its ``flowsolve_overrides`` hook (then it replaces the built-in, and ``flowsolve plugins``
  says so).
* Two plugins offering the same name are both refused for that name, whatever their names
  or installation order: looking it up raises :class:`NameClashError` naming both. The same
  holds for two plugins replacing one built-in (the built-in is kept) and for two plugins
  recognising one model in ``flowsolve_detect_adapter``.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from collections.abc import Callable, Mapping

import attrs
import pluggy

from flowsolve.core.errors import FlowsolveValueError
from flowsolve.plugins import hookspecs

ENTRY_POINT_GROUP = "flowsolve"
DISABLE_VARIABLE = "FLOWSOLVE_DISABLE_PLUGINS"
BUILTIN_PLUGIN = "flowsolve.plugins.builtin"  # the entry point of flowsolve's own solvers, transforms, ...

# What a plugin can provide by name: kind (as in error messages and ``flowsolve_overrides``) -> hook.
KINDS: dict[str, str] = {
    "base solver": "flowsolve_base_solvers",
    "transform": "flowsolve_transforms",
    "loss": "flowsolve_losses",
    "model adapter": "flowsolve_model_adapters",
    "model": "flowsolve_models",
    "solver family": "flowsolve_solver_families",
    "baseline": "flowsolve_baselines",
}


class UnknownNameError(FlowsolveValueError):
    """A name that no registered plugin provides."""


class NameClashError(UnknownNameError):
    """A name (or a model) that two plugins claim; flowsolve refuses to pick one of them."""


@attrs.frozen
class PluginRecord:
    """One discovered plugin: its entry-point name, where it came from, its error if any (a failed
    import or a failing hook), and notes on names of it that were ignored or that replace built-ins."""

    name: str
    source: str
    error: str | None = None
    disabled: bool = False
    notes: tuple[str, ...] = ()


class Registry:
    """Discovered plugins and what they provide."""

    def __init__(self, entry_points=None):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.builtin: str | None = None  # the record name of flowsolve's own plugin, unless disabled
        self._tables: dict[str, dict] = {kind: {} for kind in KINDS}
        self._refused: dict[tuple[str, str], str] = {}  # (kind, name) -> why no plugin's entry is used
        self._registered: dict[str, int] = {}  # plugin name -> index of its record
        disabled = {n.strip() for n in os.environ.get(DISABLE_VARIABLE, "").split(",") if n.strip()}
        points = entry_points if entry_points is not None else importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # The built-ins first, then by name: the order only decides the listing, never who provides what.
        for point in sorted(points, key=lambda p: (p.value != BUILTIN_PLUGIN, p.name, p.value)):
            source = f"{point.value} ({_distribution(point)})"
            if point.name in disabled:
                self.records.append(PluginRecord(point.name, source, disabled=True))
                continue
            try:
                self.manager.register(point.load(), name=point.name)
            except Exception as error:  # a broken plugin must not break the others
                message = f"{type(error).__name__}: {error}"
                warnings.warn(f"flowsolve plugin {point.name!r} ({point.value}) failed to load: {message}", stacklevel=2)
                self.records.append(PluginRecord(point.name, source, error=message))
            else:
                self._registered[point.name] = len(self.records)
                self.records.append(PluginRecord(point.name, source))
                if point.value == BUILTIN_PLUGIN and self.builtin is None:
                    self.builtin = point.name
        overrides = self._overrides()
        for kind in KINDS:
            self._collect(kind, overrides)

    # -- calling hooks, one plugin at a time ----------------------------------------------------
    def _implementations(self, hook_name: str):
        """The hook's implementations, built-ins first, then by plugin name."""
        implementations = getattr(self.manager.hook, hook_name).get_hookimpls()
        return sorted(implementations, key=lambda impl: self._registered.get(impl.plugin_name, len(self.records)))

    def _call(self, implementation, hook_name: str, **arguments) -> tuple[object, bool]:
        """``(result, False)``, or ``(None, True)`` if the implementation raised (reported on its record)."""
        try:
            return implementation.function(**{name: arguments[name] for name in implementation.argnames}), False
        except Exception as error:  # a failing hook must not break the others
            self._fail(implementation.plugin_name, f"{hook_name} raised {type(error).__name__}: {error}")
            return None, True

    def _mapping(self, implementation, hook_name: str) -> Mapping | None:
        """What a providing hook returned, or ``None`` if it raised or returned no mapping (reported)."""
        provided, failed = self._call(implementation, hook_name)
        if failed:
            return None
        provided = {} if provided is None else provided
        if not isinstance(provided, Mapping) or not all(isinstance(name, str) for name in provided):
            self._fail(implementation.plugin_name, f"{hook_name} returned a {type(provided).__name__}, not a mapping "
                                                   "{name: ...} with string names; see flowsolve.hookspecs")
            return None
        return provided

    def _overrides(self) -> dict[str, dict[str, set[str]]]:
        """``{plugin: {kind: names}}``: the built-in names each plugin declares it replaces."""
        declared: dict[str, dict[str, set[str]]] = {}
        for implementation in self._implementations("flowsolve_overrides"):
            provided = self._mapping(implementation, "flowsolve_overrides")
            if provided is None:
                continue
            valid = all(kind in KINDS and isinstance(names, (list, tuple, set, frozenset))
                        and all(isinstance(name, str) for name in names) for kind, names in provided.items())
            if not valid:
                self._fail(implementation.plugin_name,
                           f"flowsolve_overrides returned {dict(provided)!r}; it must map kinds (any of "
                           f"{list(KINDS)}) to lists of names")
                continue
            declared[implementation.plugin_name] = {kind: set(names) for kind, names in provided.items()}
        return declared

    def _collect(self, kind: str, overrides: dict[str, dict[str, set[str]]]) -> None:
        hook_name = KINDS[kind]
        offers: dict[str, list[tuple[str, object]]] = {}
        for implementation in self._implementations(hook_name):
            provided = self._mapping(implementation, hook_name)
            for name, value in (provided or {}).items():
                offers.setdefault(name, []).append((implementation.plugin_name, value))
        table = self._tables[kind]
        for name, offered in offers.items():
            builtin = [(plugin, value) for plugin, value in offered if plugin == self.builtin]
            others = sorted(((plugin, value) for plugin, value in offered if plugin != self.builtin), key=lambda o: o[0])
            what = f"{kind} {name!r}"
            if not builtin:
                if len(others) == 1:
                    table[name] = others[0][1]
                    continue
                plugins = " and ".join(self._describe(plugin) for plugin, _ in others)
                message = (f"{what} is provided by {plugins}; flowsolve uses none of them rather than pick one "
                           f"by name order. {self._disable_hint([plugin for plugin, _ in others])}")
                self._refused[(kind, name)] = message
                self._report(message, [plugin for plugin, _ in others], f"{what}: refused, also provided by another plugin")
                continue
            builtin_plugin, table[name] = builtin[0]
            replacing = [plugin for plugin, _ in others if name in overrides.get(plugin, {}).get(kind, ())]
            for plugin, _ in others:
                if plugin in replacing:
                    continue
                self._report(
                    f"flowsolve {self._describe(plugin)} provides {what}, which flowsolve's "
                    f"built-ins ({self._source(builtin_plugin)}) already provide: the built-in is kept and the plugin's "
                    f"is ignored (a plugin that means to replace it names it in its flowsolve_overrides hook)",
                    [plugin], f"{what}: ignored, the built-in {kind} of that name is used")
            if len(replacing) == 1:
                table[name] = dict(others)[replacing[0]]
                self._note(replacing[0], f"{what}: replaces the built-in (declared in flowsolve_overrides)")
            elif replacing:
                plugins = " and ".join(self._describe(plugin) for plugin in replacing)
                self._report(f"{plugins} declare that they replace the built-in {what}; flowsolve keeps the "
                             f"built-in rather than pick one by name order. {self._disable_hint(replacing)}",
                             replacing, f"{what}: replacement refused, another plugin replaces it too")

    # -- reporting ----------------------------------------------------------------------------------
    def _index(self, plugin: str) -> int:
        return self._registered[plugin]

    def _source(self, plugin: str) -> str:
        return self.records[self._index(plugin)].source

    def _describe(self, plugin: str) -> str:
        return f"plugin {plugin!r} ({self._source(plugin)})"

    @staticmethod
    def _disable_hint(plugins: list[str]) -> str:
        options = " or ".join(f"{DISABLE_VARIABLE}={plugin}" for plugin in plugins)
        return f"Uninstall one of them, or disable it with {options}"

    def _note(self, plugin: str, note: str) -> None:
        index = self._index(plugin)
        self.records[index] = attrs.evolve(self.records[index], notes=self.records[index].notes + (note,))

    def _report(self, message: str, plugins: list[str], note: str) -> None:
        warnings.warn(message, stacklevel=2)
        for plugin in plugins:
            self._note(plugin, note)

    def _fail(self, plugin: str, message: str) -> None:
        index = self._index(plugin)
        record = self.records[index]
        warnings.warn(f"flowsolve plugin {plugin!r} ({record.source}) failed: {message}", stacklevel=2)
        error = message if record.error is None else f"{record.error}; {message}"
        self.records[index] = attrs.evolve(record, error=error)

    # -- what the plugins provide ---------------------------------------------------------------
    def table(self, kind: str) -> dict:
        """``{name: object}`` of ``kind`` (a key of :data:`KINDS`), without refused names."""
        if kind not in KINDS:
            raise FlowsolveValueError(f"unknown kind {kind!r}; kinds are {list(KINDS)}")
        return dict(self._tables[kind])

    def refused(self, kind: str, name: str) -> str | None:
        """Why ``name`` of ``kind`` is refused (two plugins offer it), or ``None``."""
        return self._refused.get((kind, name))

    def base_solvers(self) -> dict[str, Callable]:
        return self.table("base solver")

    def transforms(self) -> dict[str, type]:
        return self.table("transform")

    def losses(self) -> dict[str, type]:
        return self.table("loss")

    def adapters(self) -> dict[str, Callable]:
        return self.table("model adapter")

    def solver_families(self) -> dict[str, Callable]:
        return self.table("solver family")

    def models(self) -> dict[str, Callable]:
        return self.table("model")

    def baselines(self) -> dict[str, Callable]:
        """``{name: factory}`` of every training-free baseline, built-ins first (in their order)."""
        return self.table("baseline")

    def detect_adapter(self, model):
        """``(kind, options)`` for ``model`` from the plugins that recognise it, or ``None``.

        A model that declares its own adapter (``flowsolve_adapter``, the built-in hook) keeps it;
        two plugins recognising it differently raise :class:`NameClashError` naming both.
        """
        answers = []
        for implementation in self._implementations("flowsolve_detect_adapter"):
            answer, failed = self._call(implementation, "flowsolve_detect_adapter", model=model)
            if failed or answer is None:
                continue
            if implementation.plugin_name == self.builtin:
                return answer
            answers.append((implementation.plugin_name, answer))
        if len({repr(answer) for _, answer in answers}) > 1:
            claims = " and by ".join(f"{self._describe(plugin)} as {_kind_of(answer)!r}" for plugin, answer in answers)
            raise NameClashError(f"a {type(model).__name__} is recognised by {claims}; flowsolve does not pick one: "
                                 f"pass kind= explicitly (one of {sorted(self.adapters())})")
        return answers[0][1] if answers else None


def _kind_of(answer):
    return answer[0] if isinstance(answer, (tuple, list)) and answer else answer


def _distribution(point) -> str:
    dist = getattr(point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


_REGISTRY: Registry | None = None


def registry() -> Registry:
    """The process-wide registry (discovered on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset() -> None:
    """Forget discovered plugins (re-discovered on next use), e.g. after installing one."""
    global _REGISTRY
    _REGISTRY = None


def lookup(kind: str, name: str):
    """The ``kind`` ("base solver", "transform", "loss", "model adapter", "model", "solver family",
    "baseline") registered as ``name``.

    Raises:
        NameClashError: two plugins provide ``name``; the message names both.
        UnknownNameError: nothing provides ``name``; the message lists what is registered.
    """
    found = registry()
    table = found.table(kind)
    if name in table:
        return table[name]
    refused = found.refused(kind, name)
    if refused is not None:
        raise NameClashError(refused)
    failed = [r.name for r in found.records if r.error]
    hint = f"; plugins that failed to load: {failed}" if failed else ""
    raise UnknownNameError(f"unknown {kind} {name!r}; registered: {sorted(table)}{hint}")


def transform_classes() -> dict[str, type]:
    """Transforms known by name (what solver files refer to)."""
    return registry().transforms()


def model(name: str, **options):
    """The velocity field of the model registered as ``name`` (e.g. ``"gmm-fm-ot"``); ``options``
    go to its factory (e.g. ``guidance=2.0`` for a class-conditional zoo model)."""
    return lookup("model", name)(**options)


def base_solver(name: str):
    """A new instance of the base solver registered as ``name``."""
    return lookup("base solver", name)()

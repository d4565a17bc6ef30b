"""Plugin manager: loads every entry point of group ``marlbench`` and indexes what they offer.

A plugin that fails to import, or whose hook raises, is recorded with its name and error and
skipped; the others keep working. Names are unique across plugins: built-ins are loaded first
and keep their names, and a second registration of a name is reported as a failure of the later
plugin, naming both distributions, rather than silently shadowing the first.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import importlib.util
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from marlbench import hookspecs
from marlbench.api import AlgorithmSpec, DatasetRecipe, EnvSpec
from marlbench.errors import MarlbenchError, UnknownNameError

ENTRY_POINT_GROUP = "marlbench"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where a registered item came from."""

    plugin: str  # entry point (or plugin) name
    distribution: str  # "name version" of the installed package, or "<in-process>"
    builtin: bool

    def __str__(self) -> str:
        return f"{self.plugin} ({'built-in' if self.builtin else self.distribution})"


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from {self.distribution} failed: {self.error}"


@dataclass
class Registry:
    """Everything the loaded plugins offer, by name."""

    pm: pluggy.PluginManager
    algorithms: dict[str, tuple[AlgorithmSpec, Origin]] = field(default_factory=dict)
    environments: dict[str, tuple[EnvSpec, Origin]] = field(default_factory=dict)
    recipes: dict[tuple[str, str], tuple[DatasetRecipe, Origin]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    _origins: dict[str, Origin] = field(default_factory=dict)

    # -- lookups --------------------------------------------------------------------------------

    def algorithm(self, name: str) -> AlgorithmSpec:
        if name not in self.algorithms:
            raise UnknownNameError("algorithm", name, self.algorithms)
        return self.algorithms[name][0]

    def stage_of(self, offline_algo: str, scratch: bool = False) -> AlgorithmSpec:
        """The algorithm that continues runs of `offline_algo` (`marlbench finetune`)."""
        for spec, _ in self.algorithms.values():
            if spec.continues == offline_algo and spec.from_scratch == scratch:
                return spec
        stages = sorted({s.continues for s, _ in self.algorithms.values() if s.continues})
        raise MarlbenchError(f"no loaded plugin continues runs of {offline_algo!r} "
                             f"(those that can be continued: {', '.join(stages) or 'none'})")

    def environment(self, name: str) -> EnvSpec:
        if name not in self.environments:
            # A name of a known family (e.g. "smax-5m_vs_7m") lists that family's tasks when
            # there are few enough to read.
            prefix = name.split("-", 1)[0] + "-"
            family = [n for n in self.environments if n.startswith(prefix)]
            raise UnknownNameError("environment", name, self.environments,
                                   listing=family if 0 < len(family) <= 40 else None)
        return self.environments[name][0]

    def recipes_for(self, env: EnvSpec) -> dict[str, DatasetRecipe]:
        return {q: r for (fam, q), (r, _) in self.recipes.items() if fam == env.family}

    def recipe(self, env: EnvSpec, quality: str) -> DatasetRecipe:
        recipes = self.recipes_for(env)
        if quality not in recipes:
            raise UnknownNameError(f"dataset quality for {env.name}", quality, recipes)
        return recipes[quality]

    # -- lifecycle broadcast --------------------------------------------------------------------

    def broadcast(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a failing logger warns, the run goes on."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - a broken logger must not kill a run
                warnings.warn(f"plugin {impl.plugin_name!r} failed in {hook}: {exc!r}",
                              stacklevel=2)

    # -- building -------------------------------------------------------------------------------

    def _collect(self) -> None:
        for hook, table, key in (
            ("marlbench_algorithms", self.algorithms, lambda s: s.name),
            ("marlbench_environments", self.environments, lambda s: s.name),
            ("marlbench_dataset_recipes", self.recipes, lambda s: (s.family, s.quality)),
        ):
            # Built-ins first, then plugins in registration order: on a name clash the
            # earlier one keeps the name and the later one is reported.
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            for impl in sorted(impls, key=lambda i: not self._origin(i.plugin_name).builtin):
                origin = self._origin(impl.plugin_name)
                try:
                    items = list(impl.function() or ())
                except Exception as exc:  # noqa: BLE001 - isolate the faulty plugin
                    self._fail(origin, f"{hook} raised {exc!r}")
                    continue
                for item in items:
                    k = key(item)
                    if k in table:
                        first = table[k][1]
                        self._fail(origin, f"{hook}: {k!r} from {origin.distribution} clashes "
                                           f"with {k!r} from {first.distribution} (plugin "
                                           f"{first.plugin!r}), which keeps the name")
                        continue
                    table[k] = (item, origin)

    def _origin(self, plugin_name: str) -> Origin:
        return self._origins.get(plugin_name, Origin(plugin_name, "<in-process>", False))

    def _fail(self, origin: Origin, error: str) -> None:
        # Recorded once; the CLI prints each failure once (as a warning, or in `plugins`).
        self.failures.append(PluginFailure(origin.plugin, origin.distribution, error))
        log.debug("%s", self.failures[-1])


def _distribution_label(ep: md.EntryPoint) -> tuple[str, bool]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>", False
    name = dist.metadata["Name"]
    return f"{name} {dist.version}", name == "marlbench"


def build_registry(extra_plugins: Iterable[tuple[str, object]] = ()) -> Registry:
    """Load every installed plugin (plus `extra_plugins`, as (name, module) pairs)."""
    pm = pluggy.PluginManager("marlbench")
    pm.add_hookspecs(hookspecs)
    reg = Registry(pm)
    seen: dict[str, Origin] = {}
    # Built-ins first, whatever order the path lists distributions in: a third-party entry
    # point that reuses a built-in name (e.g. found first on PYTHONPATH) never replaces it.
    labelled = [(ep, *_distribution_label(ep)) for ep in md.entry_points(group=ENTRY_POINT_GROUP)]
    for ep, label, builtin in sorted(labelled, key=lambda x: (not x[2], x[0].name, x[1])):
        origin = Origin(ep.name, label, builtin)
        if ep.name in seen:
            first = seen[ep.name]
            if first.distribution != label:
                reg._fail(origin, f"entry point {ep.name!r} of {label} clashes with "
                                  f"{ep.name!r} of {first.distribution}, which keeps the name")
            continue  # the same distribution seen twice on the path: not an error
        seen[ep.name] = origin
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - report and continue with the others
            reg._fail(origin, f"import of {ep.value!r} failed: {exc!r}")
            continue
        reg._origins[ep.name] = origin
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        reg._origins[name] = Origin(name, "<in-process>", False)
    reg._collect()
    return reg


def importable(module: str) -> bool:
    """Whether an optional dependency can be imported, without importing it (Ray, the
    trackers: each takes a second or more to load)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def registry() -> Registry:
    """The process-wide registry of installed plugins (loaded once)."""
    reg = build_registry()
    if not reg.algorithms and not reg.environments:
        raise MarlbenchError(
            "no marlbench plugins found: is marlbench installed (pip install -e .)? "
            "Entry points are only visible for installed distributions.")
    return reg

"""Plugin discovery (stevedore, entry-point group ``pvc.plugins``) and hook calls (pluggy)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pluggy
from stevedore import NamedExtensionManager

from pvc_kernel import hookspecs
from pvc_kernel.settings import Settings
from pvc_kernel.state import schema

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pvc.plugins"


class PluginError(Exception):
    """A plugin could not be loaded or does not fit the hook contracts."""


def available(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Names of every installed plugin, without importing any of them."""
    probe = NamedExtensionManager(group, names=[], on_missing_entrypoints_callback=None)
    return sorted({ep.name for ep in probe.list_entry_points()})


class PluginHost:
    """The process's pluggy PluginManager, filled from entry points."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.names: list[str] = []
        self.declared: dict[str, Settings | None] = {}
        """Each loaded plugin's declared settings (None: it takes none)."""

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def load(self, disabled: Iterable[str] = (), group: str = ENTRY_POINT_GROUP,
             enabled: Iterable[str] | None = None) -> list[str]:
        """Import and register every plugin of ``group`` not in ``disabled`` (and, when
        ``enabled`` is given, in it).

        Raises PluginError naming the plugin if one fails to import, implements a hook that
        ``hookspecs`` does not define, or is enabled but not installed.
        """
        disabled = set(disabled)
        installed = available(group)
        if enabled is not None:
            missing = sorted(set(enabled) - set(installed))
            if missing:
                raise PluginError(f"plugins.enabled names plugin(s) that are not installed: "
                                  f"{', '.join(missing)} (installed: {', '.join(installed)})")
        names = [n for n in installed if n not in disabled
                 and (enabled is None or n in set(enabled))]
        failures: list[str] = []

        def on_failure(_mgr: Any, entry_point: Any, exc: BaseException) -> None:
            failures.append(f"plugin '{entry_point.name}' ({entry_point.value}) failed to load: "
                            f"{type(exc).__name__}: {exc}")

        mgr = NamedExtensionManager(group, names=names, on_load_failure_callback=on_failure,
                                    on_missing_entrypoints_callback=None)
        if failures:
            raise PluginError("; ".join(failures) + " (disable it with plugins.disabled)")
        for ext in mgr:
            self.register(ext.plugin, ext.name)
        return self.names

    def register(self, plugin: Any, name: str) -> None:
        """Register one plugin, checking its hooks against the specs: a class (what entry
        points name) is instantiated first, so each PluginHost, i.e. each daemon, has its
        own plugin instance holding that daemon's plugin state; a module or an object is
        registered as it is."""
        if inspect.isclass(plugin):
            try:
                plugin = plugin()
            except Exception as exc:
                raise PluginError(f"plugin '{name}' could not be created: "
                                  f"{type(exc).__name__}: {exc}") from None
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            try:
                self.pm.unregister(name=name)
            except Exception:  # not registered at all
                pass
            raise PluginError(f"plugin '{name}' does not fit the PVC hooks: {exc}") from None
        callers = self.pm.get_hookcallers(plugin) or []
        wrappers = sorted(impl.function.__name__ for caller in callers
                          for impl in caller.get_hookimpls()
                          if impl.plugin_name == name and (impl.hookwrapper or impl.wrapper))
        declared = self._call_one(name, "pvc_config_settings") if callers else None
        problem = ""
        if wrappers:
            problem = (f"hook wrappers are not supported ({', '.join(wrappers)}): PVC calls "
                       "each implementation on its own (PluginHost.call_each)")
        elif not callers:
            problem = ("implements no hook (its entry point should name the plugin class, "
                       "whose methods are marked with hookimpl)")
        elif declared is not None and not isinstance(declared, Settings):
            problem = ("pvc_config_settings must return a pvc_kernel.sdk.Settings, not "
                       f"{type(declared).__name__}")
        if problem:
            self.pm.unregister(name=name)
            raise PluginError(f"plugin '{name}': {problem}")
        self.names.append(name)
        self.declared[name] = declared
        for key in self._call_one(name, "pvc_schema_keys") or []:
            try:
                schema.register(key)
            except schema.SchemaError as exc:
                raise PluginError(f"plugin '{name}': {exc}") from None

    def _call_one(self, name: str, hook_name: str, **kwargs: Any) -> Any:
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name == name:
                return impl.function(**{a: kwargs[a] for a in impl.argnames})
        return None

    def plugin(self, name: str) -> Any:
        """The registered instance (or module) of the plugin ``name``."""
        return self.pm.get_plugin(name)

    def config_problems(self, config: Any,
                        installed: Iterable[str] | None = None) -> list[str]:
        """Every problem with the ``plugins:`` part of ``config`` (a NodeConfig), each naming
        its key: each loaded plugin's section checked against its declared settings
        (``pvc_config_settings``), a section of a plugin that is not installed, and settings
        given to a loaded plugin that declares none. ``installed``: plugin names whose
        sections are fine although not loaded (disabled or not enabled)."""
        problems: list[str] = []
        known = set(self.names) | set(installed or ())
        for name, declared in self.declared.items():
            if declared is not None:
                problems += declared.validate(config.plugin_section(name), f"plugins.{name}")[1]
        for name, section in config.plugin_sections.items():
            if name not in known:
                problems.append(f"key 'plugins.{name}': no plugin named {name!r} is installed")
            elif name in self.names and self.declared.get(name) is None and section:
                keys = ", ".join(sorted(section)) if isinstance(section, dict) else section
                problems.append(f"key 'plugins.{name}': plugin {name!r} takes no settings "
                                f"(found: {keys})")
        return problems

    def config_help(self) -> list[str]:
        """The plugins' sections of pvcnoded.yaml (under ``plugins:``) as commented YAML:
        every loaded plugin's declared keys with default, type and help."""
        lines = []
        for name in sorted(self.names):
            declared = self.declared.get(name)
            if declared is None:
                lines.append(f"  {name}: {{}}  # takes no settings")
                continue
            lines += ["  " + line for line in declared.help_lines(name)]
        return lines

    def call_first(self, hook_name: str, obj: str = "", raising: bool = False,
                   **kwargs: Any) -> Any:
        """Call the implementations of a ``firstresult`` hook in ``call_each``'s order, each
        in isolation, until one answers non-None; later ones are not called (their side
        effects do not happen). Returns that answer, or None. With ``raising`` (for hooks
        whose contract is to refuse by raising), an implementation's exception goes to the
        caller instead of being logged and passed over."""
        caller = getattr(self.pm.hook, hook_name)
        if not (caller.spec and caller.spec.opts.get("firstresult")):
            raise ValueError(f"{hook_name} is not a firstresult hook; use call_each")
        for impl in reversed(caller.get_hookimpls()):
            try:
                value = impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception:
                if raising:
                    raise
                log.exception("plugin '%s' failed in %s%s", impl.plugin_name, hook_name,
                              f" for {obj}" if obj else "")
                continue
            if value is not None:
                return value
        return None

    def call_each(self, hook_name: str, obj: str = "", *,
                  before_each: Callable[[], None] | None = None,
                  passthrough: tuple[type[BaseException], ...] = (),
                  failures: list[tuple[str, Exception]] | None = None,
                  **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a hook in isolation, in pluggy's calling order (the
        plugin registered last first). The one dispatcher of the kernel.

        Returns ``[(plugin name, result)]`` for the implementations that returned; one that
        raises is logged with the plugin and ``obj`` and left out (and appended to
        ``failures`` when given), the others still run. ``before_each`` runs before every
        implementation (e.g. a task's cancellation check) and may raise; exceptions of a
        ``passthrough`` type stop the call and propagate.
        """
        results = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            if before_each is not None:
                before_each()
            try:
                value = impl.function(**{a: kwargs[a] for a in impl.argnames})
            except passthrough:
                raise
            except Exception as exc:
                log.exception("plugin '%s' failed in %s%s", impl.plugin_name, hook_name,
                              f" for {obj}" if obj else "")
                if failures is not None:
                    failures.append((impl.plugin_name, exc))
                continue
            results.append((impl.plugin_name, value))
        return results

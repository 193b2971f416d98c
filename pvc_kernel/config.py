"""The node configuration file ``pvcnoded.yaml``: every key, its type and default.

Example::

    node: hv1                 # this node's name in the cluster (required)
    cluster: lab              # the cluster's name (required)
    coordinator: true         # runs ZooKeeper and may become primary (default false)
    zookeeper:
      hosts: [10.0.0.1:2181, 10.0.0.2:2181, 10.0.0.3:2181]   # required
      session_timeout: 6      # seconds before ZooKeeper expires a silent session
      secret: null            # pvcnoded's ZooKeeper credential, the SAME on every node (at
                              # least 16 characters, no spaces; e.g. `openssl rand -hex 24`):
                              # secret keys (BMC passwords) get a digest ACL so only
                              # pvcnoded reads them, not pvcapid nor any other client. Unset:
                              # they stay readable by any ZooKeeper client (a warning says so)
    keepalive_interval: 2     # seconds between keepalives
    fence_intervals: 6        # a node in state `run` whose keepalive is older than
                              # keepalive_interval × fence_intervals is dead: the primary
                              # fences it (fence delay, 12 s by default)
    suicide_intervals: 4      # a node without a keepalive written for longer than
                              # keepalive_interval × suicide_intervals (cut off from
                              # ZooKeeper) stops its own VMs; must be less than
                              # fence_intervals, so it happens before anyone may fence it.
                              # Each node publishes these three settings (node static
                              # data, ``liveness``): the primary never declares a node dead
                              # before that node's own suicide delay + one of its intervals
    log:
      level: info             # debug | info | warning | error
      zookeeper_lines: 2000   # node log lines kept in ZooKeeper for `pvc node log`
    tasks:
      retention: 86400        # seconds a finished task is kept
    api:
      enabled: false          # run pvcapid on this node (coordinators)
      listen_address: 127.0.0.1
      port: 7370
      keys: []                # API keys accepted in X-Api-Key; empty = no authentication
      threads: 8              # waitress worker threads (concurrent requests)
      wait_timeout: 300       # seconds a request with wait=true blocks before answering 202
      trusted_proxy: null     # address of the TLS front (reverse proxy) whose X-Forwarded-*
                              # headers are believed; "*" trusts any peer; null trusts none
      trusted_proxy_headers: [x-forwarded-proto, x-forwarded-for, x-forwarded-host]
      metrics: true           # serve Prometheus metrics at /api/v1/metrics (docs/metrics.md)
      metrics_auth: false     # true: a scrape needs an API key (X-Api-Key) like any request
      metrics_cache: 5        # seconds a metrics answer is reused (scrapes of several servers)
    plugins:
      enabled: null           # if a list: load only these installed plugins (null = all)
      disabled: []            # plugin names not to load (applies after enabled)
      <plugin name>: {...}    # that plugin's own section, validated by the plugin

Errors name the key and the problem; ``load`` raises ConfigError with all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_PATH = "/etc/pvc/pvcnoded.yaml"
LIVENESS = "liveness"
"""The key of a node's static data (``node.static``) holding its published liveness
settings (``NodeConfig.liveness()``)."""
CONFIG_ENV = "PVC_CONFIG_FILE"


class ConfigError(Exception):
    """One or more problems in a configuration file; ``problems`` lists them."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


PROXY_HEADERS = ("forwarded", "x-forwarded-proto", "x-forwarded-for", "x-forwarded-host",
                 "x-forwarded-port", "x-forwarded-by")
"""The proxy headers waitress understands (``forwarded`` cannot be combined with the others)."""
PROXY_HEADERS_DEFAULT = ("x-forwarded-proto", "x-forwarded-for", "x-forwarded-host")


@dataclass
class ApiConfig:
    enabled: bool = False
    listen_address: str = "127.0.0.1"
    port: int = 7370
    keys: list[str] = field(default_factory=list)
    threads: int = 8
    wait_timeout: float = 300.0
    trusted_proxy: str | None = None
    trusted_proxy_headers: list[str] = field(default_factory=lambda: list(PROXY_HEADERS_DEFAULT))
    metrics: bool = True
    metrics_auth: bool = False
    metrics_cache: float = 5.0


@dataclass
class NodeConfig:
    node: str
    cluster: str
    zookeeper_hosts: list[str]
    coordinator: bool = False
    zookeeper_session_timeout: float = 6.0
    zookeeper_secret: str | None = field(default=None, repr=False)
    keepalive_interval: float = 2.0
    fence_intervals: int = 6
    suicide_intervals: int = 4
    log_level: str = "info"
    log_zookeeper_lines: int = 2000
    task_retention: float = 86400.0
    api: ApiConfig = field(default_factory=ApiConfig)
    disabled_plugins: list[str] = field(default_factory=list)
    enabled_plugins: list[str] | None = None
    plugin_sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @property
    def fence_delay(self) -> float:
        """Seconds of keepalive silence after which a running node is dead."""
        return self.keepalive_interval * self.fence_intervals

    @property
    def suicide_delay(self) -> float:
        """Seconds without a written keepalive after which a node stops its own VMs."""
        return self.keepalive_interval * self.suicide_intervals

    def liveness(self) -> dict[str, Any]:
        """This node's liveness settings, as it publishes them in its static data."""
        return {"keepalive_interval": self.keepalive_interval,
                "fence_intervals": self.fence_intervals,
                "suicide_intervals": self.suicide_intervals}

    def fence_delay_for(self, static: dict[str, Any] | None) -> float:
        """Seconds of silence after which this node (as primary) may declare dead the node
        whose static data is ``static``: never less than its own fence delay, nor than that
        node's published suicide delay plus one of its keepalive intervals (so the node has
        stopped its own workloads first, whatever its settings). A node that published no
        settings gets this node's fence delay."""
        live = (static or {}).get(LIVENESS) if isinstance(static, dict) else None
        try:
            interval = float(live["keepalive_interval"])
            suicide = int(live["suicide_intervals"])
        except (TypeError, KeyError, ValueError):
            return self.fence_delay
        if interval <= 0 or suicide < 0:
            return self.fence_delay
        return max(self.fence_delay, interval * (suicide + 1))

    def plugin_section(self, name: str) -> dict[str, Any]:
        """The plugin's own section (empty if the file has none)."""
        return self.plugin_sections.get(name, {})


class _Reader:
    """Walks a parsed YAML mapping, collecting problems instead of stopping at the first."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.problems: list[str] = []

    def _lookup(self, dotted: str) -> tuple[bool, Any]:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"key '{key}': {text}")

    def value(self, key: str, kind: type | tuple, default: Any = None, required: bool = False,
              choices: tuple = (), minimum: float | None = None) -> Any:
        present, value = self._lookup(key)
        if not present or value is None:
            if required:
                self.problem(key, "is required")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is int and isinstance(value, bool):
            self.problem(key, f"must be an integer, not {value!r}")
            return default
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.problem(key, f"must be of type {names}, not {type(value).__name__} ({value!r})")
            return default
        if choices and value not in choices:
            self.problem(key, f"must be one of {', '.join(map(str, choices))}, not {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.problem(key, f"must be at least {minimum}, not {value!r}")
            return default
        return value

    def unknown(self, section: str, allowed: set[str]) -> None:
        present, value = self._lookup(section) if section else (True, self.data)
        if present and isinstance(value, dict):
            for k in value:
                if k not in allowed:
                    full = f"{section}.{k}" if section else str(k)
                    self.problem(full, "is not a known setting")
        elif present and value is not None:
            self.problem(section, f"must be a mapping, not {type(value).__name__}")


_TOP = {"node", "cluster", "coordinator", "zookeeper", "keepalive_interval", "fence_intervals",
        "suicide_intervals", "log", "tasks", "api", "plugins"}


def parse(data: Any, source: str = "") -> NodeConfig:
    """Validate a parsed YAML document; raises ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(["the file must hold a YAML mapping of settings"], source)
    r = _Reader(data)
    r.unknown("", _TOP)
    for section, allowed in (("zookeeper", {"hosts", "session_timeout", "secret"}),
                             ("log", {"level", "zookeeper_lines"}),
                             ("tasks", {"retention"}),
                             ("api", {"enabled", "listen_address", "port", "keys", "threads",
                                      "wait_timeout", "trusted_proxy",
                                      "trusted_proxy_headers", "metrics", "metrics_auth",
                                      "metrics_cache"})):
        r.unknown(section, allowed)

    node = r.value("node", str, required=True)
    if node is not None and not _valid_name(node):
        r.problem("node", f"{node!r} may hold only letters, digits, '-', '_' and '.'")
    hosts = r.value("zookeeper.hosts", (list, str), required=True)
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if hosts is not None:
        if not hosts or not all(isinstance(h, str) and h for h in hosts):
            r.problem("zookeeper.hosts", "must list at least one host[:port]")
            hosts = None
    secret = _secret(r, "zookeeper.secret")
    keys = r.value("api.keys", list, default=[])
    if keys and not all(isinstance(k, str) and len(k) >= 8 for k in keys):
        r.problem("api.keys", "every key must be a string of at least 8 characters")
    proxy_headers = r.value("api.trusted_proxy_headers", list, default=list(PROXY_HEADERS_DEFAULT))
    if not all(isinstance(h, str) and h.lower() in PROXY_HEADERS for h in proxy_headers):
        r.problem("api.trusted_proxy_headers",
                  f"each entry must be one of {', '.join(PROXY_HEADERS)}")
        proxy_headers = list(PROXY_HEADERS_DEFAULT)
    proxy_headers = [h.lower() for h in proxy_headers]
    if "forwarded" in proxy_headers and len(set(proxy_headers)) > 1:
        r.problem("api.trusted_proxy_headers", "'forwarded' cannot be combined with x-forwarded-*")

    plugins = r.value("plugins", dict, default={})
    disabled = plugins.get("disabled", []) if plugins else []
    if not isinstance(disabled, list) or not all(isinstance(p, str) for p in disabled):
        r.problem("plugins.disabled", "must be a list of plugin names")
        disabled = []
    enabled = plugins.get("enabled") if plugins else None
    if enabled is not None and (not isinstance(enabled, list)
                                or not all(isinstance(p, str) for p in enabled)):
        r.problem("plugins.enabled", "must be a list of plugin names (or null for all)")
        enabled = None
    sections = {}
    for name, section in (plugins or {}).items():
        if name in ("disabled", "enabled"):
            continue
        if section is None:
            section = {}
        if not isinstance(section, dict):
            r.problem(f"plugins.{name}", f"must be a mapping, not {type(section).__name__}")
            continue
        sections[str(name)] = section

    cfg = NodeConfig(
        node=node or "",
        cluster=r.value("cluster", str, required=True) or "",
        zookeeper_hosts=hosts or [],
        coordinator=r.value("coordinator", bool, default=False),
        zookeeper_session_timeout=r.value("zookeeper.session_timeout", float, 6.0, minimum=2),
        zookeeper_secret=secret,
        keepalive_interval=r.value("keepalive_interval", float, 2.0, minimum=0.5),
        fence_intervals=r.value("fence_intervals", int, 6, minimum=2),
        suicide_intervals=r.value("suicide_intervals", int, 4, minimum=1),
        log_level=r.value("log.level", str, "info", choices=("debug", "info", "warning", "error")),
        log_zookeeper_lines=r.value("log.zookeeper_lines", int, 2000, minimum=10),
        task_retention=r.value("tasks.retention", float, 86400.0, minimum=60),
        api=ApiConfig(
            enabled=r.value("api.enabled", bool, False),
            listen_address=r.value("api.listen_address", str, "127.0.0.1"),
            port=r.value("api.port", int, 7370, minimum=1),
            keys=keys or [],
            threads=r.value("api.threads", int, 8, minimum=1),
            wait_timeout=r.value("api.wait_timeout", float, 300.0, minimum=1),
            trusted_proxy=r.value("api.trusted_proxy", str, None) or None,
            trusted_proxy_headers=proxy_headers,
            metrics=r.value("api.metrics", bool, True),
            metrics_auth=r.value("api.metrics_auth", bool, False),
            metrics_cache=r.value("api.metrics_cache", float, 5.0, minimum=0),
        ),
        disabled_plugins=disabled,
        enabled_plugins=enabled,
        plugin_sections=sections,
        source=source,
    )
    if cfg.suicide_intervals >= cfg.fence_intervals:
        r.problem("suicide_intervals", f"must be less than fence_intervals "
                  f"({cfg.fence_intervals}), not {cfg.suicide_intervals}: a node cut off from "
                  "ZooKeeper must stop its VMs (after keepalive_interval × suicide_intervals) "
                  "before the others may fence it (after keepalive_interval × fence_intervals)")
    if cfg.api.port > 65535:
        r.problem("api.port", f"must be at most 65535, not {cfg.api.port}")
    if r.problems:
        raise ConfigError(r.problems, source)
    return cfg


def example() -> str:
    """The kernel's settings as commented YAML: the example of this module's docstring,
    without the plugins' own sections (their keys are declared by the plugins)."""
    text = __doc__.split("Example::", 1)[1].split("\nErrors name the key", 1)[0]
    return "".join(line[4:] + "\n" for line in text.strip("\n").splitlines()
                   if "<plugin name>" not in line)


def load(path: str | None = None) -> NodeConfig:
    """Read and validate the config file (``path``, else $PVC_CONFIG_FILE, else the default)."""
    path = path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(["the file does not exist"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot be read: {exc.strerror}"], path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"is not valid YAML{where}"], path) from None
    return parse(data, path)


SECRET_MIN_LENGTH = 16


def _secret(r: _Reader, key: str) -> str | None:
    """A credential setting: a string of at least SECRET_MIN_LENGTH printable characters
    without spaces. Problems never show the value."""
    present, value = r._lookup(key)
    if not present or value is None:
        return None
    if not isinstance(value, str):
        r.problem(key, f"must be a string, not {type(value).__name__} (quote it)")
        return None
    if not value.isprintable() or any(c.isspace() for c in value):
        r.problem(key, "must not hold spaces or control characters")
        return None
    if len(value) < SECRET_MIN_LENGTH:
        r.problem(key, f"must be at least {SECRET_MIN_LENGTH} characters long, not "
                       f"{len(value)}")
        return None
    return value


def _valid_name(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_." for c in text) and text[0].isalnum()

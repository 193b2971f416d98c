"""Named cluster connections: the per-user config file, env overrides and selection.

File: $PVC_CLI_CONFIG, else $XDG_CONFIG_HOME/pvc/pvc.json, else ~/.config/pvc/pvc.json (mode 0600):

    {"version": 1, "default": "prod",
     "connections": {"prod": {"addresses": ["10.0.0.1", "10.0.0.2:7371"], "port": 7370,
                              "scheme": "https", "api_key": "...", "verify": true,
                              "ca_file": "/etc/pvc/ca.pem", "description": ""}}}

A file in the original PVC CLI's layout ({"name": {"host": ..., "port": ..., ...}}) is read too.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pvc_cli.errors import EXIT_CONFIG, PvcError

DEFAULT_PORT = 7370
SCHEMES = ("http", "https")
API_PREFIX = "/api/v1"

ENV_CONFIG = "PVC_CLI_CONFIG"
ENV_CLUSTER = "PVC_CLUSTER"
ENV_CLUSTER_LEGACY = "PVC_CONNECTION"  # the original CLI's variable
ENV_HOSTS = "PVC_API_HOSTS"
ENV_KEY = "PVC_API_KEY"
ENV_SCHEME = "PVC_API_SCHEME"
ENV_VERIFY = "PVC_API_VERIFY"
ENV_CA_FILE = "PVC_API_CA_FILE"

ADD_HINT = "add one with `pvc connection add NAME --address HOST` or set PVC_API_HOSTS=host:port"


@dataclass(frozen=True)
class Endpoint:
    """One API address of a cluster."""

    scheme: str
    host: str
    port: int

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.label}{API_PREFIX}"


def parse_address(text: str, port: int = DEFAULT_PORT, scheme: str = "http") -> Endpoint:
    """Parse `host`, `host:port`, `[v6]:port`, a bare IPv6 literal, or `scheme://host[:port]`."""
    text = text.strip().rstrip("/")
    if "://" in text:
        scheme, text = text.split("://", 1)
        text = text.split("/", 1)[0]
    if scheme not in SCHEMES:
        raise PvcError(f"invalid scheme {scheme!r} in address (use http or https)", EXIT_CONFIG)
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    if not host:
        raise PvcError(f"invalid address {text!r}: no host", EXIT_CONFIG)
    return Endpoint(scheme, host, port)


def _port(value: str, whole: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise PvcError(f"invalid port in address {whole!r}", EXIT_CONFIG)
    return port


def split_addresses(values: list[str] | tuple[str, ...] | str) -> list[str]:
    """`a,b` and repeated options both give a flat list of address strings."""
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@dataclass
class Connection:
    """How to reach one cluster: several API addresses (tried in order) and credentials."""

    name: str
    addresses: list[str]
    port: int = DEFAULT_PORT
    scheme: str = "http"
    api_key: str | None = None
    api_key_file: str | None = None
    verify: bool = True
    ca_file: str | None = None
    """CA certificate(s) (PEM) that sign the API's TLS certificate, instead of the system's."""
    description: str = ""
    source: str = "config"  # "config" or "env"

    def tls_verify(self) -> bool | str:
        """What ``requests`` gets as ``verify``: False, True (system CAs) or the CA file."""
        if not self.verify:
            return False
        if not self.ca_file:
            return True
        path = os.path.expanduser(self.ca_file)
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise PvcError(
                f"cannot read the CA file {self.ca_file} of connection {self.name!r}", EXIT_CONFIG
            )
        return path

    def endpoints(self) -> list[Endpoint]:
        return [parse_address(a, self.port, self.scheme) for a in self.addresses]

    def key(self) -> str | None:
        """The API key, reading api_key_file on each use so that a rotated key is picked up."""
        if self.api_key:
            return self.api_key
        if self.api_key_file:
            try:
                return Path(self.api_key_file).expanduser().read_text().strip() or None
            except OSError as exc:
                raise PvcError(
                    f"cannot read the API key file {self.api_key_file} of connection "
                    f"{self.name!r}: {exc.strerror or exc}",
                    EXIT_CONFIG,
                ) from None
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "addresses": self.addresses,
            "port": self.port,
            "scheme": self.scheme,
            "verify": self.verify,
            "description": self.description,
        }
        if self.ca_file:
            data["ca_file"] = self.ca_file
        if self.api_key:
            data["api_key"] = self.api_key
        if self.api_key_file:
            data["api_key_file"] = self.api_key_file
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> Connection:
        addresses = data.get("addresses")
        if addresses is None and data.get("host"):  # the original CLI's layout
            addresses = [str(data["host"])]
        return cls(
            name=name,
            addresses=split_addresses(addresses or []),
            port=int(data.get("port") or DEFAULT_PORT),
            scheme=str(data.get("scheme") or "http"),
            api_key=data.get("api_key") or None,
            api_key_file=data.get("api_key_file") or None,
            verify=bool(data.get("verify", data.get("verify_ssl", True))),
            ca_file=data.get("ca_file") or None,
            description=str(data.get("description") or ""),
        )


@dataclass
class Store:
    """The contents of the config file."""

    path: Path
    connections: dict[str, Connection] = field(default_factory=dict)
    default: str | None = None

    def save(self) -> None:
        payload = {
            "version": 1,
            "default": self.default,
            "connections": {n: c.to_json() for n, c in sorted(self.connections.items())},
        }
        _write_private(self.path, json.dumps(payload, indent=2) + "\n")


def config_path() -> Path:
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "pvc" / "pvc.json"


def load_store(path: Path | None = None) -> Store:
    path = path or config_path()
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return Store(path)
    except OSError as exc:
        raise PvcError(
            f"cannot read the config file {path}: {exc.strerror or exc}", EXIT_CONFIG
        ) from None
    try:
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        if "connections" in data:
            entries = data.get("connections") or {}
            default = data.get("default")
        else:  # the original CLI's layout: {name: {...}}
            entries = {k: v for k, v in data.items() if isinstance(v, dict)}
            default = None
        conns = {name: Connection.from_json(name, entry) for name, entry in entries.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise PvcError(f"the config file {path} is not valid: {exc}", EXIT_CONFIG) from None
    return Store(path, conns, default if default in conns else None)


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (the file holds API keys)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pvc-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_connection() -> Connection | None:
    """The ad-hoc connection from PVC_API_HOSTS (+ PVC_API_KEY, PVC_API_SCHEME, PVC_API_VERIFY,
    PVC_API_CA_FILE)."""
    hosts = os.environ.get(ENV_HOSTS, "").strip()
    if not hosts:
        return None
    verify = os.environ.get(ENV_VERIFY, "true").strip().lower() not in ("0", "false", "no", "off")
    return Connection(
        name="env",
        addresses=split_addresses(hosts),
        scheme=os.environ.get(ENV_SCHEME, "http").strip() or "http",
        api_key=os.environ.get(ENV_KEY) or None,
        verify=verify,
        ca_file=os.environ.get(ENV_CA_FILE, "").strip() or None,
        description=f"from ${ENV_HOSTS}",
        source="env",
    )


def resolve(name: str | None = None, store: Store | None = None) -> Connection:
    """Pick: -c NAME, else $PVC_CLUSTER, else $PVC_API_HOSTS, else the default/only one."""
    name = name or os.environ.get(ENV_CLUSTER) or os.environ.get(ENV_CLUSTER_LEGACY) or None
    if name is None:
        adhoc = env_connection()
        if adhoc is not None:
            return _checked(adhoc)
    store = store or load_store()
    if name is not None:
        if name in store.connections:
            return _checked(store.connections[name])
        known = ", ".join(sorted(store.connections)) or "none"
        raise PvcError(
            f"no connection named {name!r} in {store.path} (known: {known})", EXIT_CONFIG
        )
    if store.default:
        return _checked(store.connections[store.default])
    if len(store.connections) == 1:
        return _checked(next(iter(store.connections.values())))
    if not store.connections:
        raise PvcError(f"no cluster connection configured; {ADD_HINT}", EXIT_CONFIG)
    names = ", ".join(sorted(store.connections))
    raise PvcError(
        f"several connections ({names}) and none is the default; choose one with -c NAME, "
        f"PVC_CLUSTER=NAME or `pvc connection default NAME`",
        EXIT_CONFIG,
    )


def _checked(conn: Connection) -> Connection:
    if not conn.addresses:
        raise PvcError(f"connection {conn.name!r} has no address; {ADD_HINT}", EXIT_CONFIG)
    conn.endpoints()  # raises a clear error on a malformed address
    return conn

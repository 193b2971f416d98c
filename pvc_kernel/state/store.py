"""The one ZooKeeper client of a process, addressed by schema key names."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    LockTimeout,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import ACL, make_digest_acl

from pvc_kernel.state import schema
from pvc_kernel.state.view import View, subtree_depths

log = logging.getLogger(__name__)

T = TypeVar("T")

SECRET_USER = "pvcnoded"
"""The digest identity of node daemons: ``pvcnoded:<zookeeper.secret>``."""

StateListener = Callable[[str], None]
"""Called with "connected", "suspended" or "lost" when the session state changes."""


RECURSIVE_DELETE_TRIES = 10

class ConflictError(Exception):
    """A version-checked write lost a race more times than it was allowed to retry."""


class LockBusy(Exception):
    """A cluster lock stayed held by someone else (or ZooKeeper failed) for the whole wait."""


Read = tuple[str, str, dict[str, Any]]
"""One read of ``Store.fetch``: (``"get"`` | ``"versioned"`` | ``"children"``, schema key
name, placeholder values)."""

Watcher = Callable[[Any], None]
"""A one-shot ZooKeeper watch: called once with kazoo's WatchedEvent when the key changes."""

_MISSING = {"get": None, "versioned": (None, -1)}
"""What ``fetch`` answers for a key that does not exist, by kind (``children``: [])."""


class HeldLock:
    """A cluster lock this session holds (from ``Store.try_lock``) until ``release``;
    ``with held:`` releases it when the block ends."""

    def __init__(self, store: Store, name: str, lock: Lock) -> None:
        self._store = store
        self._lock = lock
        self.name = name

    @property
    def held(self) -> bool:
        """True until released, as far as this process knows (no ZooKeeper round trip)."""
        return bool(self._lock.is_acquired and self._lock.node)

    def still_ours(self) -> bool:
        """Asks ZooKeeper: True if our queue entry still exists and belongs to this session
        (False once the session that took the lock expired). Raises kazoo's exceptions when
        ZooKeeper cannot answer."""
        if not self.held:
            return False
        stat = self._store.client.exists(f"{self._lock.path}/{self._lock.node}")
        return stat is not None and stat.ephemeralOwner == self._store.session_id

    def release(self) -> None:
        """Give the lock up; raises kazoo's exceptions if ZooKeeper cannot be told (the lock
        stays held: call again later, or let the session's end release it)."""
        self._lock.release()

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (dict, list, bool, int, float)) or value is None:
        return json.dumps(value).encode()
    return str(value).encode()


class Store:
    """kazoo client + schema-aware helpers.

    Values are stored as UTF-8 text; dicts and lists as JSON. With ``secret`` (the node
    daemon's ``zookeeper.secret``) the session authenticates as pvcnoded's digest identity,
    and keys marked secret in the schema (and their parent) are written with an ACL that
    lets only that identity in; reading them without it raises kazoo's NoAuthError.
    """

    def __init__(self, hosts: str | Iterable[str], timeout: float = 6.0,
                 listener: StateListener | None = None, secret: str | None = None) -> None:
        if not isinstance(hosts, str):
            hosts = ",".join(hosts)
        self.hosts = hosts
        self.client = KazooClient(hosts=hosts, timeout=timeout,
                                  connection_retry={"max_tries": -1, "delay": 0.2,
                                                    "max_delay": 2.0},
                                  command_retry={"max_tries": 3, "delay": 0.1,
                                                 "max_delay": 1.0},
                                  auth_data=[("digest", f"{SECRET_USER}:{secret}")]
                                  if secret else None)
        self._secret_acl: list[ACL] | None = (
            [make_digest_acl(SECRET_USER, secret, all=True)] if secret else None)
        self._warned_open = False
        self.connected_since = 0.0
        """Wall-clock time the connection was last (re)established (0: never)."""
        self._listeners: list[StateListener] = [listener] if listener else []
        self.client.add_listener(self._on_state)
        self.view: View | None = None
        """The watch-maintained copy reads come from, once ``use_view`` made one."""
        self._writes = 0
        self._local = threading.local()
        self._memos: dict[tuple[str, str], dict[str, tuple[Any, Any]]] = {}

    # -- connection -------------------------------------------------------
    def _on_state(self, state: str) -> None:
        name = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "suspended",
                KazooState.LOST: "lost"}.get(state, str(state).lower())
        if name == "connected":
            self.connected_since = time.time()
        for fn in list(self._listeners):
            try:
                fn(name)
            except Exception:  # a listener must never break kazoo's thread
                log.exception("connection state listener failed")

    def add_listener(self, fn: StateListener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: StateListener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def use_view(self, names: Iterable[str]) -> View:
        """Keep the subtrees of these schema keys (no placeholders) in a watch-maintained
        ``View`` and answer reads under them from it (see ``view.py``): for a process that
        reads whole subtrees often (pvcapid). Call before ``start``."""
        if self.view is not None:
            raise RuntimeError("this store has a view already")
        self.view = View(self.client, subtree_depths(names))
        self.add_listener(self.view.on_state)
        if self.client.connected:
            self.view.on_state("connected")
        return self.view

    def _viewed(self, path: str, children: bool = False) -> View | None:
        """The view, caught up, if it answers reads of ``path``; else None (read ZooKeeper)."""
        view = self.view
        if view is None or not view.ready or not view.covers(path, children):
            return None
        return view if self._caught_up(view) else None

    def _caught_up(self, view: View) -> bool:
        local = self._local
        if getattr(local, "snapshot", False) and local.writes == self._writes:
            return True             # caught up in this snapshot, and nothing written since
        writes = self._writes
        if not view.catch_up():
            return False
        local.writes = writes
        return True

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads from the view in this block (this thread) share one catch-up, done again
        only after this process writes: for a handler that reads many keys one by one.
        They see the cluster as it was when the block began (plus this process' writes),
        so never wait inside it for another process' write."""
        local = self._local
        if getattr(local, "snapshot", False):
            yield
            return
        local.snapshot, local.writes = True, -1
        try:
            yield
        finally:
            local.snapshot = False

    def per_child(self, memo: str, name: str, build: Callable[[list[str]], dict[str, T]],
                  depends: Any = None, **kw: Any) -> dict[str, T] | None:
        """``{child: value}`` for every child of key ``name``, where ``build(children)``
        makes the values of those children (reading what it needs through this store).
        Values are kept (under ``memo``, a name for what ``build`` makes) and built again only
        for children whose subtree changed, or all of them when ``depends`` changed. The
        values are shared between callers: never change one. None without a ready view of
        ``name``: then read directly."""
        p = schema.path(name, **kw)
        view = self._viewed(p, children=True)
        if view is None or p not in view.roots:
            return None
        stamps = view.stamps(p)
        kept = self._memos.get((memo, p), {})
        fresh = {c: kept[c] for c, stamp in stamps.items()
                 if c in kept and kept[c][0] == (stamp, depends)}
        missing = [c for c in stamps if c not in fresh]
        if missing:
            built = build(missing)
            fresh.update({c: ((stamps[c], depends), built[c]) for c in missing if c in built})
        self._memos[(memo, p)] = fresh
        return {c: value for c, (_stamp, value) in fresh.items()}

    def generation(self, name: str, **kw: Any) -> int | None:
        """A number that changes whenever anything under key ``name`` (a viewed root)
        changes; None without a ready view of it."""
        p = schema.path(name, **kw)
        view = self._viewed(p)
        return view.generation(p) if view is not None and p in view.roots else None

    def _wrote(self) -> None:
        self._writes += 1

    def start(self, timeout: float = 30.0) -> None:
        """Connect, waiting at most ``timeout`` seconds for a session."""
        self.client.start(timeout=timeout)

    def start_async(self) -> None:
        """Start connecting and return at once; kazoo keeps retrying in the background (the
        listeners hear "connected" when a session is there)."""
        self.client.start_async()

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()
        try:
            self.client.stop()
        finally:
            self.client.close()

    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def authenticated(self) -> bool:
        """True if this client holds pvcnoded's identity (secret keys are protected)."""
        return self._secret_acl is not None

    @property
    def session_id(self) -> int | None:
        sid = self.client.client_id
        return sid[0] if sid else None

    # -- plain access -----------------------------------------------------
    def get(self, name: str, default: str | None = None, **kw: Any) -> str | None:
        p = schema.path(name, **kw)
        view = self._viewed(p)
        if view is not None:
            text, _ = view.versioned(p)
            return default if text is None else text
        try:
            data, _ = self.client.get(p)
        except NoNodeError:
            return default
        return data.decode() if data is not None else default

    def get_versioned(self, name: str, **kw: Any) -> tuple[str | None, int]:
        """(value, version); version is -1 when the key does not exist."""
        p = schema.path(name, **kw)
        view = self._viewed(p)
        if view is not None:
            return view.versioned(p)
        try:
            data, stat = self.client.get(p)
        except NoNodeError:
            return None, -1
        return (data.decode() if data is not None else None), stat.version

    def get_many(self, keys: Iterable[tuple[str, dict[str, Any]]],
                 timeout: float = 10.0) -> list[tuple[str | None, int]]:
        """Versioned reads of several keys in one round trip (``fetch``): ``[(value,
        version)]``, ``(None, -1)`` for a key that does not exist."""
        return self.fetch([("versioned", name, kw) for name, kw in keys], timeout)

    def fetch(self, requests: Sequence[Read], timeout: float = 10.0,
              watch: Watcher | Sequence[Watcher | None] | None = None,
              missing_as_none: bool = False) -> list[Any]:
        """The pipelined read: every request is sent at once (kazoo async), the answers are
        collected in order, so any number of keys costs one round trip, and none waits
        longer than ``timeout`` (kazoo's synchronous calls wait forever while the connection
        is down).

        Per kind: ``get`` → the value as text (None if the key does not exist); ``versioned``
        → (text, version), (None, -1) if it does not exist; ``children`` → the sorted child
        names, [] if it does not exist. A value is decoded as UTF-8 with replacement, and a
        node without data reads as "". With ``missing_as_none`` every key that does not
        exist answers None, whatever its kind.

        ``watch`` (a callable, or one per request, None for none) is set as a one-shot watch
        on the keys read. Raises kazoo's ConnectionLoss/SessionExpiredError or
        KazooTimeoutError when ZooKeeper cannot answer.
        """
        watches = (list(watch) if isinstance(watch, Sequence)
                   else [watch] * len(requests))
        if len(watches) != len(requests):
            raise ValueError("fetch: one watch per request, or one for all")
        paths = [schema.path(name, **kw) for _kind, name, kw in requests]
        view = self.view
        if (view is not None and view.ready and not any(watches)
                and all(view.covers(p, kind == "children")
                        for p, (kind, _n, _kw) in zip(paths, requests, strict=True))
                and self._caught_up(view)):
            return [self._from_view(view, kind, p, missing_as_none)
                    for p, (kind, _n, _kw) in zip(paths, requests, strict=True)]
        pending = []
        for (kind, _name, _kw), w, p in zip(requests, watches, paths, strict=True):
            if kind == "children":
                pending.append((kind, self.client.get_children_async(p, watch=w)))
            elif kind in _MISSING:
                pending.append((kind, self.client.get_async(p, watch=w)))
            else:
                raise ValueError(f"fetch: unknown kind of read {kind!r}")
        out: list[Any] = []
        for kind, result in pending:
            try:
                value = result.get(timeout=timeout)
            except NoNodeError:
                out.append(None if missing_as_none else _MISSING.get(kind, []))
                continue
            if kind == "children":
                out.append(sorted(value))
                continue
            data, stat = value
            text = data.decode("utf-8", "replace") if data is not None else ""
            out.append((text, stat.version) if kind == "versioned" else text)
        return out

    @staticmethod
    def _from_view(view: View, kind: str, path: str, missing_as_none: bool) -> Any:
        if kind == "children":
            found = view.children(path)
            return found if found is not None else (None if missing_as_none else [])
        if kind not in _MISSING:
            raise ValueError(f"fetch: unknown kind of read {kind!r}")
        text, version = view.versioned(path)
        if text is None:
            return None if missing_as_none else _MISSING[kind]
        return (text, version) if kind == "versioned" else text

    def get_json(self, name: str, default: Any = None, **kw: Any) -> Any:
        text = self.get(name, **kw)
        if text in (None, ""):
            return default
        try:
            return json.loads(text)
        except ValueError:
            log.warning("key %s holds invalid JSON", schema.path(name, **kw))
            return default

    def exists(self, name: str, **kw: Any) -> bool:
        p = schema.path(name, **kw)
        view = self._viewed(p)
        if view is not None:
            return view.exists(p)
        return self.client.exists(p) is not None

    def children(self, name: str, **kw: Any) -> list[str]:
        p = schema.path(name, **kw)
        view = self._viewed(p, children=True)
        if view is not None:
            return view.children(p) or []
        try:
            return sorted(self.client.get_children(p))
        except NoNodeError:
            return []

    def set(self, name: str, value: Any, **kw: Any) -> None:
        """Create or overwrite one key (for keys only one writer owns)."""
        p = schema.path(name, **kw)
        data = _encode(value)
        self._protect(name, p)
        self._wrote()
        try:
            self.client.set(p, data)
        except NoNodeError:
            try:
                self._create(name, p, data)
            except NodeExistsError:
                self.client.set(p, data)

    def ensure(self, name: str, value: Any = "", **kw: Any) -> bool:
        """Create the key with ``value`` unless it exists; True if created."""
        p = schema.path(name, **kw)
        self._protect(name, p)
        self._wrote()
        try:
            self._create(name, p, _encode(value))
            return True
        except NodeExistsError:
            return False

    def delete(self, name: str, recursive: bool = True, **kw: Any) -> bool:
        """Delete the key, and its children unless not ``recursive`` (then a key with
        children raises kazoo's NotEmptyError); False if it did not exist.

        A recursive delete is not atomic: a child written meanwhile (a node's report under
        the key) makes the last step fail, so it is tried again a few times."""
        p = schema.path(name, **kw)
        self._wrote()
        try:
            self.client.delete(p)
        except NoNodeError:
            return False
        except NotEmptyError:
            if not recursive:
                raise
            for attempt in range(RECURSIVE_DELETE_TRIES):
                try:
                    self.client.delete(p, recursive=True)
                    break
                except NotEmptyError:
                    if attempt == RECURSIVE_DELETE_TRIES - 1:
                        raise
        return True

    def create(self, name: str, value: Any = "", ephemeral: bool = False,
               sequence: bool = False, **kw: Any) -> str:
        """Create the key (and missing parents) with ``value``; raises kazoo's
        NodeExistsError if it exists. ``ephemeral``: it goes with this session;
        ``sequence``: ZooKeeper appends a counter to the name. Returns the path created."""
        p = schema.path(name, **kw)
        self._protect(name, p)
        self._wrote()
        return self._create(name, p, _encode(value), ephemeral=ephemeral, sequence=sequence)

    def create_ephemeral(self, name: str, value: Any = "", **kw: Any) -> None:
        """Create an ephemeral key, replacing one left by an expired session of ours."""
        p = schema.path(name, **kw)
        self._wrote()
        try:
            self.client.create(p, _encode(value), ephemeral=True, makepath=True)
        except NodeExistsError:
            _, stat = self.client.get(p)
            if stat.ephemeralOwner != self.session_id:
                self.client.delete(p)
                self.client.create(p, _encode(value), ephemeral=True, makepath=True)

    # -- watches ----------------------------------------------------------------------
    def watch_once(self, keys: Sequence[tuple[str, dict[str, Any]]], watcher: Watcher,
                   timeout: float = 10.0) -> None:
        """Set a one-shot watch on each key (schema name, path arguments), existing or not:
        ``watcher(event)`` runs at the key's next change (created, changed, deleted) or at
        the next connection loss, then the watch is gone. For waits that must leave nothing
        behind when they end (a ``data_watch`` stays until its key next changes)."""
        pending = [self.client.exists_async(schema.path(name, **kw), watch=watcher)
                   for name, kw in keys]
        for result in pending:
            result.get(timeout=timeout)

    def data_watch(self, name: str, fn: Callable[..., Any], **kw: Any) -> DataWatch:
        """Call ``fn(data, stat)`` now and whenever the key's value changes (kazoo's
        DataWatch: ``data`` is bytes, None while the key does not exist); the watch ends
        when ``fn`` returns False."""
        return DataWatch(self.client, schema.path(name, **kw), fn)

    def children_watch(self, name: str, fn: Callable[[list[str]], Any],
                       **kw: Any) -> ChildrenWatch:
        """Call ``fn(children)`` now and whenever the key's children change (kazoo's
        ChildrenWatch; the key must exist); the watch ends when ``fn`` returns False."""
        return ChildrenWatch(self.client, schema.path(name, **kw), fn)

    # -- secret keys ----------------------------------------------------------------
    def _create(self, name: str, p: str, data: bytes, ephemeral: bool = False,
                sequence: bool = False) -> str:
        """Create ``p`` (and missing parents); a secret key and its parent get the ACL."""
        if not schema.is_secret(name) or self._secret_acl is None:
            return self.client.create(p, data, makepath=True, ephemeral=ephemeral,
                                      sequence=sequence)
        parent = schema.secret_parent(p)
        self.client.ensure_path(schema.secret_parent(parent))   # open, like every other key
        try:
            self.client.create(parent, b"", acl=self._secret_acl)
        except NodeExistsError:
            pass
        return self.client.create(p, data, acl=self._secret_acl, ephemeral=ephemeral,
                                  sequence=sequence)

    def _protect(self, name: str, p: str) -> None:
        """Before a secret key is written: give it and its parent the ACL if they exist
        without it (written before a secret was configured); without a secret, warn once
        that the key is open."""
        if not schema.is_secret(name):
            return
        if self._secret_acl is None:
            if not self._warned_open:
                self._warned_open = True
                log.warning("no zookeeper.secret is configured: secret keys such as %s are "
                            "readable by every ZooKeeper client (see docs/operator.md)", p)
            return
        for path in (schema.secret_parent(p), p):
            try:
                acl, stat = self.client.get_acls(path)
            except NoNodeError:
                continue
            if list(acl) != self._secret_acl:
                self.client.set_acls(path, self._secret_acl, version=stat.aversion)
                log.info("protected %s: only pvcnoded's identity may read it now", path)

    # -- safe concurrent writes ----------------------------------------------
    def transaction(self):
        """A kazoo transaction; add operations with paths from ``schema.path``."""
        return self.client.transaction()

    def commit(self, txn) -> None:
        """Commit a transaction, raising ConflictError if any operation failed."""
        self._wrote()
        results = txn.commit()
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise ConflictError(f"transaction failed: {failed[0]!r}")

    def set_if_version(self, name: str, value: Any, version: int, **kw: Any) -> bool:
        """Write only if the key is still at ``version`` (-1: must not exist). True on success."""
        p = schema.path(name, **kw)
        self._protect(name, p)
        self._wrote()
        try:
            if version == -1:
                self._create(name, p, _encode(value))
            else:
                self.client.set(p, _encode(value), version=version)
            return True
        except (BadVersionError, NodeExistsError, NoNodeError):
            return False

    def update(self, name: str, fn: Callable[[str | None], Any], retries: int = 20,
               **kw: Any) -> Any:
        """Read-modify-write with a version check, retried on conflict; returns the new value."""
        for _ in range(retries):
            current, version = self.get_versioned(name, **kw)
            new = fn(current)
            if self.set_if_version(name, new, version, **kw):
                return new
        raise ConflictError(f"too many concurrent writers on {schema.path(name, **kw)}")

    def lock(self, name: str, identifier: str = "") -> Lock:
        """A cluster-wide exclusive lock under /locks/<name>: kazoo's raw recipe, for the
        state package (migrations); use ``locked`` or ``try_lock`` elsewhere."""
        return self.lock_at("lock", identifier, lock=name)

    def lock_at(self, key: str, identifier: str = "", **kw: Any) -> Lock:
        """kazoo's Lock recipe queueing under schema key ``key`` (the kernel's election);
        the caller acquires, cancels and releases it."""
        return self.client.Lock(schema.path(key, **kw), identifier)

    def try_lock(self, name: str, identifier: str = "", timeout: float = 15.0
                 ) -> HeldLock | None:
        """Wait up to ``timeout`` seconds for /locks/<name>: the held lock, or None if it
        stayed busy. Raises kazoo's exceptions if ZooKeeper fails meanwhile. For a caller
        that skips its work when the lock is busy, or checks it while it works (``held``,
        ``still_ours``); ``locked`` is the simple case."""
        lock = self.lock(name, identifier)
        try:
            got = lock.acquire(timeout=timeout)
        except LockTimeout:
            got = False
        return HeldLock(self, name, lock) if got else None

    def drop_session_children(self, name: str, session: int | None, keep: str | None = None,
                              **kw: Any) -> list[str]:
        """Delete the children of key ``name`` that are ephemeral nodes of ZooKeeper session
        ``session``, except the child ``keep``: queue entries a lock recipe of the session
        left behind when a connection drop interrupted it. Returns the names deleted; raises
        kazoo's exceptions when ZooKeeper fails (what was deleted stays deleted)."""
        base = schema.path(name, **kw)
        dropped = []
        for child in self.client.get_children(base):
            if child == keep:
                continue
            try:
                _data, stat = self.client.get(f"{base}/{child}")
            except NoNodeError:
                continue
            if stat.ephemeralOwner == session:
                self._wrote()
                log.info("removing orphaned entry %s of %s", child, base)
                self.client.delete(f"{base}/{child}")
                dropped.append(child)
        return dropped

    @contextmanager
    def locked(self, name: str, identifier: str = "", timeout: float = 15.0,
               what: str = "") -> Iterator[HeldLock]:
        """``with store.locked(name, me, timeout):`` holds /locks/<name> for the block;
        raises LockBusy (naming ``what``, default the lock) if it cannot be had within
        ``timeout`` seconds, ZooKeeper errors included. Released however the block ends."""
        try:
            held = self.try_lock(name, identifier, timeout)
        except KazooException as exc:
            raise LockBusy(f"{what or 'lock ' + name}: cannot take its lock "
                           f"({type(exc).__name__})") from None
        if held is None:
            raise LockBusy(f"{what or 'lock ' + name}: its lock stayed busy for {timeout:g} s")
        try:
            yield held
        finally:
            try:
                held.release()
            except KazooException:
                log.warning("could not release lock %s (the session will)", name)

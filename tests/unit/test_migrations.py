"""Schema migrations in order, resumable, and refused against a newer schema (in-memory)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from pvc_kernel.state import migrations, schema


class FakeStore:
    """Keys by name; records every write and lock so the order can be checked."""

    def __init__(self, version: str | None = None) -> None:
        self.data: dict[str, str] = {} if version is None else {"schema.version": version}
        self.log: list[tuple[str, ...]] = []

    def get(self, name: str, **_kw: Any) -> str | None:
        return self.data.get(name)

    def set(self, name: str, value: str, **_kw: Any) -> None:
        self.log.append(("set", name, value))
        self.data[name] = value

    def ensure(self, name: str, value: str = "", **_kw: Any) -> None:
        self.log.append(("ensure", name))
        self.data.setdefault(name, value)

    @contextlib.contextmanager
    def lock(self, name: str, identifier: str = ""):
        self.log.append(("lock", name))
        yield


def versions(store: FakeStore) -> list[str]:
    return [e[2] for e in store.log if e[:2] == ("set", "schema.version")]


def test_v0_migrates_step_by_step_under_the_lock():
    store = FakeStore()
    assert migrations.migrate(store, "hv1") == 0
    assert store.log[0] == ("lock", "schema-migration")
    assert versions(store) == [str(v) for v in range(1, schema.SCHEMA_VERSION + 1)]
    assert store.data["config.maintenance"] == "false" and "tasks" in store.data
    # each version bump follows its migration's own writes
    bump = store.log.index(("set", "schema.version", "1"))
    assert ("ensure", "config") in store.log[:bump] and ("ensure", "tasks") not in \
        store.log[:bump]


def test_current_schema_is_left_alone_and_a_partial_one_resumes():
    store = FakeStore(str(schema.SCHEMA_VERSION))
    assert migrations.migrate(store) == schema.SCHEMA_VERSION and store.log == []
    store = FakeStore("1")
    assert migrations.migrate(store) == 1
    assert versions(store) == [str(v) for v in range(2, schema.SCHEMA_VERSION + 1)]
    assert ("ensure", "config") not in store.log      # v0 → v1 is not run again


def test_a_failing_migration_leaves_the_last_completed_version(monkeypatch):
    def broken(_store):
        raise RuntimeError("disk full")

    monkeypatch.setattr(migrations, "MIGRATIONS", [migrations.MIGRATIONS[0], broken])
    store = FakeStore()
    with pytest.raises(RuntimeError):
        migrations.migrate(store, target=2)
    assert store.data["schema.version"] == "1"


def test_a_newer_schema_is_refused_with_a_clear_message():
    store = FakeStore(str(schema.SCHEMA_VERSION + 1))
    with pytest.raises(migrations.SchemaTooNewError, match="newer than version"):
        migrations.migrate(store)
    assert store.log == []


def test_garbage_version_reads_as_zero():
    assert migrations.current_version(FakeStore("x")) == 0

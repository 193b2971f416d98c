"""The storage benchmark: fio (its ``rbd`` engine, straight through librbd) on a temporary
volume, eight tests, results kept in ZooKeeper (``/ceph/benchmarks/<job>``).

Task ``storage.benchmark`` runs on the primary. The volume is filled first, so reads touch
real objects; then every test runs ``runtime`` seconds (plugin setting ``benchmark.runtime``).
Results use test_format 1: each test's value is fio's ``--output-format=json`` document.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from typing import Any

from pvc_kernel.sdk import schema
from pvc_plugins.storage_ceph import pools, units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import StorageError

TEST_FORMAT = 1
# name: (fio rw, block size, iodepth); run writes first so the reads find data
TESTS = {
    "seq_write": ("write", "4M", 64),
    "seq_read": ("read", "4M", 64),
    "rand_write_4M": ("randwrite", "4M", 64),
    "rand_read_4M": ("randread", "4M", 64),
    "rand_write_4K": ("randwrite", "4K", 64),
    "rand_read_4K": ("randread", "4K", 64),
    "rand_write_4K_lowdepth": ("randwrite", "4K", 1),
    "rand_read_4K_lowdepth": ("randread", "4K", 1),
}
RESULT_ORDER = ("seq_read", "seq_write", "rand_read_4M", "rand_write_4M", "rand_read_4K",
                "rand_write_4K", "rand_read_4K_lowdepth", "rand_write_4K_lowdepth")


def default_job(primary: str, now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now or time.time())) + \
        f"_{primary}"


def volume_name(job: str) -> str:
    return "pvcbenchmark_" + re.sub(r"[^A-Za-z0-9_]", "_", job)[:64]


def fio_argv(settings: CephConfig, pool: str, volume: str, name: str, rw: str, bs: str,
             depth: int, runtime: int | None) -> list[str]:
    argv = ["fio", f"--name={name}", "--ioengine=rbd", f"--clientname={settings.rados_id}",
            f"--pool={pool}", f"--rbdname={volume}", "--direct=1", "--invalidate=0",
            f"--rw={rw}", f"--bs={bs}", f"--iodepth={depth}", "--numjobs=1",
            "--group_reporting", "--output-format=json"]
    if runtime:
        argv += ["--time_based", f"--runtime={runtime}"]
    return argv


def run_fio(settings: CephConfig, argv: list[str], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, CEPH_CONF=settings.ceph_conf)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise StorageError("fio is not installed on this node (apt-get install fio)") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"fio did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise StorageError(f"fio failed: {err[-1] if err else proc.returncode}")
    start = proc.stdout.find("{")      # fio may print notes before the JSON document
    return json.loads(proc.stdout[start:])


def summary(result: dict[str, Any], test: str) -> dict[str, Any]:
    """{bw_bytes, iops, io_bytes} of the test's direction from its fio document."""
    job = (result.get("jobs") or [{}])[0]
    side = job.get("write" if "write" in test else "read") or {}
    return {k: side.get(k, 0) for k in ("bw_bytes", "iops", "io_bytes")}


def create_record(store: Any, job: str, txn: Any = None) -> dict[str, Any]:
    """A "Running" benchmark record with the next id (added to ``txn`` if given)."""
    if not schema.valid_segment(job):
        raise StorageError(f"Invalid benchmark name {job!r}")
    if store.exists("ceph.benchmark", job=job):
        raise StorageError(f'A benchmark named "{job}" already exists.')
    store.ensure("ceph.benchmarks")
    seq = int(store.update("ceph.benchmark_seq", lambda v: str(int(v or 0) + 1)))
    record = {"id": seq, "job": job, "test_format": TEST_FORMAT, "benchmark_result": "Running"}
    if txn is not None:
        txn.create(schema.path("ceph.benchmark", job=job), json.dumps(record).encode())
    else:
        store.create("ceph.benchmark", json.dumps(record), job=job)
    return record


def list_benchmarks(store: Any, job: str | None = None) -> list[dict[str, Any]]:
    names = [job] if job else store.children("ceph.benchmarks")
    found = [store.get_json("ceph.benchmark", None, job=n) for n in names
             if schema.valid_segment(n)]
    return sorted((r for r in found if r), key=lambda r: r.get("id", 0), reverse=True)


def run(ctx: Any, client: CephClient, settings: CephConfig, store: Any) -> str:
    """Task ``storage.benchmark`` (args: pool, job)."""
    import rbd

    pool, job = ctx.args["pool"], ctx.args["job"]
    vol = volume_name(job)
    runtime = settings.benchmark_runtime
    total = len(TESTS) + 2
    try:
        pools.require_pool(client, pool)
        with client.ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, vol, settings.benchmark_volume_size, old_format=False)
        try:
            size = units.format_size(settings.benchmark_volume_size)
            ctx.progress(1, total, f"Filling the {size} test volume {pool}/{vol}")
            run_fio(settings, fio_argv(settings, pool, vol, "prefill", "write", "4M", 16, None),
                    timeout=3600)
            results: dict[str, Any] = {}
            for i, (test, (rw, bs, depth)) in enumerate(TESTS.items(), start=2):
                ctx.check()
                ctx.progress(i, total, f"Running test {test} ({runtime} s)")
                results[test] = run_fio(settings, fio_argv(settings, pool, vol, test, rw, bs,
                                                           depth, runtime),
                                        timeout=runtime * 3 + 120)
        finally:
            with client.ioctx(pool) as ioctx:
                rbd.RBD().remove(ioctx, vol)
    except BaseException:
        store.delete("ceph.benchmark", job=job)
        raise
    record = store.get_json("ceph.benchmark", {}, job=job) or {"id": 0, "job": job}
    record.update(test_format=TEST_FORMAT,
                  benchmark_result={t: results[t] for t in RESULT_ORDER})
    store.set("ceph.benchmark", record, job=job)
    return f"Storage benchmark {job} finished on pool {pool}."

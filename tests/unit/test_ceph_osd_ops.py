"""OSD replace / refresh / DB volume group: parameter validation without Ceph or ZooKeeper
(a bad request is refused before anything is looked up)."""

from __future__ import annotations

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel import config
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_plugins.storage_ceph import osd_db, routes
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin

KEY = "unit-test-key"
S = "/api/v1/storage/ceph"


class OfflineStore(Store):
    """Claims to be connected so requests reach validation; never really used."""

    connected = True


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    conf = tmp_path_factory.mktemp("ceph") / "ceph.conf"  # readable: Ceph counts as set up
    conf.write_text("[global]\n")
    cfg = config.parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["127.0.0.1:9"]},
                        "api": {"keys": [KEY]},
                        "plugins": {"storage_ceph": {"ceph_conf": str(conf)}}})
    plugins = PluginHost()
    plugins.register(StorageCephPlugin, "storage_ceph")
    api = create_app(OfflineStore("127.0.0.1:9"), cfg, plugins)
    return falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})


def test_routes_of_the_reference():
    ops = {(r.method, r.path) for r in routes.ROUTES}
    assert {("POST", "/storage/ceph/osd/{osdid}"), ("PUT", "/storage/ceph/osd/{osdid}"),
            ("POST", "/storage/ceph/osddb")} <= ops
    handlers = StorageCephPlugin().pvc_task_handlers()
    assert {"osd.replace", "osd.refresh", "osd.add_db_vg"} <= set(handlers)


@pytest.mark.parametrize("params, fragment", [
    ({}, "new_device"),
    ({"new_device": "/dev/sdd"}, "yes-i-really-mean-it"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "weight": "heavy"}, "weight"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "weight": "-1"}, "at least 0"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "ext_db_size": "lots"},
     "Invalid size 'lots'"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "ext_db_size": "1M"},
     "at least 64M"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "ext_db_ratio": "1.5"},
     "between 0 and 1"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "ext_db_ratio": "0.1",
      "ext_db_size": "20G"}, "not both"),
    ({"new_device": "/dev/sdd", "yes-i-really-mean-it": "yes", "force": "maybe"}, "force"),
])
def test_replace_refuses_bad_input(http, params, fragment):
    r = http.simulate_post(f"{S}/osd/3", params=params)
    assert r.status_code == 400 and fragment in r.json["message"], r.json


def test_refresh_and_db_vg_need_their_parameters(http):
    r = http.simulate_put(f"{S}/osd/3")
    assert r.status_code == 400 and "'device'" in r.json["message"]
    r = http.simulate_post(f"{S}/osddb", params={"device": "/dev/nvme0n1"})
    assert r.status_code == 400 and "'node'" in r.json["message"]
    r = http.simulate_post(f"{S}/osddb", params={"node": "hv1"})
    assert r.status_code == 400 and "'device'" in r.json["message"]


def test_add_checks_the_db_options(http):
    base = {"node": "hv1", "device": "/dev/sdb", "weight": 1}
    r = http.simulate_post(f"{S}/osd", params={**base, "ext_db_size": "20Q"})
    assert r.status_code == 400 and "Invalid size" in r.json["message"]
    r = http.simulate_post(f"{S}/osd", params={**base, "ext_db_ratio": "0"})
    assert r.status_code == 400 and "between 0 and 1" in r.json["message"]
    r = http.simulate_post(f"{S}/osd", params={**base, "osd_count": 2})
    assert r.status_code == 400 and "Split OSDs" in r.json["message"]


def test_check_args_and_db_bytes(tmp_path):
    assert osd_db.check_args(None, None) == (None, None)
    assert osd_db.check_args(None, "") == (None, None)
    assert osd_db.check_args(0.05, None) == (0.05, None)
    assert osd_db.check_args(None, "20G") == (None, 20 * 2**30)
    for ratio, size in ((0.0, None), (1.0, None), (0.1, "1G"), (None, "-1")):
        with pytest.raises(StorageError):
            osd_db.check_args(ratio, size)
    dev = tmp_path / "dev.img"
    dev.write_bytes(b"")
    with open(dev, "wb") as fh:
        fh.truncate(10 * 2**30)
    assert osd_db.db_bytes(str(dev), 0.05, None) == int(10 * 2**30 * 0.05)
    assert osd_db.db_bytes(str(dev), 0.000001, None) == osd_db.MIN_DB_BYTES
    assert osd_db.db_bytes(str(dev), None, 2**30) == 2**30
    assert osd_db.db_bytes(str(dev), 0.0123, None) % 2**20 == 0
    assert osd_db.db_bytes(str(dev), None, None) is None
    assert osd_db.lv_path(7) == "/dev/osd-db/osd-7"


def test_db_vg_needs_a_block_device(tmp_path):
    with pytest.raises(StorageError, match="not a block device"):
        osd_db.create_vg(lambda argv, t: None, str(tmp_path))
    with pytest.raises(StorageError, match="No such file"):
        osd_db.create_vg(lambda argv, t: None, str(tmp_path / "nope"))

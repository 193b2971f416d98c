"""Target selection and memory fit checks (pvc_plugins.vm_kvm.placement)."""

from __future__ import annotations

from pvc_plugins.vm_kvm.placement import NodeInfo, VmLoad, choose, could_ever_fit, fits, usage


def nodes(**over):
    base = {"hv1": NodeInfo("hv1", 4096, 8, load=0.5), "hv2": NodeInfo("hv2", 2048, 4, load=2.0),
            "hv3": NodeInfo("hv3", 8192, 2, load=1.0)}
    for name, changes in over.items():
        for k, v in changes.items():
            setattr(base[name], k, v)
    return list(base.values())


VMS = [VmLoad("a", "hv1", "start", 1024, 2), VmLoad("b", "hv1", "stop", 2048, 1),
       VmLoad("c", "hv3", "migrate", 4096, 1), VmLoad("d", "hv3", "start", 512, 1)]


def test_usage_counts_running_states_as_allocated():
    u = usage(VMS)
    assert (u["hv1"].allocated, u["hv1"].provisioned, u["hv1"].vcpus, u["hv1"].vms) == \
        (1024, 3072, 2, 2)
    assert (u["hv3"].allocated, u["hv3"].vcpus) == (4608, 2)


def test_selectors():
    ns = nodes()
    assert choose(ns, VMS, 256, 1, "mem") == "hv3"        # 8192-4608 > 4096-1024 > 2048
    assert choose(ns, VMS, 256, 1, "memprov") == "hv3"    # 3584 vs 1024 vs 2048
    assert choose(ns, VMS, 256, 1, "load") == "hv1"
    assert choose(ns, VMS, 256, 1, "vcpus") == "hv2"
    assert choose(ns, VMS, 256, 1, "vms") == "hv2"
    assert choose(ns, VMS, 256, 1, None) == "hv3"         # default: mem


def test_fit_limit_exclude_and_states():
    ns = nodes()
    assert choose(ns, VMS, 3500, 1, "mem") == "hv3"       # hv1 has only 3072 MiB left
    assert choose(ns, VMS, 3584, 1, "mem") == "hv3"       # exactly fills hv3
    assert choose(ns, VMS, 3585, 1, "mem") is None        # hv1 has 3072 left, hv3 3584
    assert choose(ns, VMS, 256, 1, node_limit=["hv2"]) == "hv2"
    assert choose(ns, VMS, 256, 1, exclude=["hv3"]) == "hv1"
    assert choose(ns, VMS, 256, 3, "mem") == "hv1"        # hv3 has only 2 CPUs
    assert choose(nodes(hv3={"domain_state": "flushed"}), VMS, 256, 1) == "hv1"
    assert choose(nodes(hv3={"daemon_state": "dead"}), VMS, 256, 1) == "hv1"
    assert choose(nodes(hv3={"hypervisor": False}), VMS, 256, 1) == "hv1"


def test_moving_vm_does_not_count_against_itself():
    ns = nodes()
    assert choose(ns, VMS, 4096, 1, node_limit=["hv3"]) is None
    assert choose(ns, VMS, 4096, 1, node_limit=["hv3"], moving="c") == "hv3"


def test_fits_and_could_ever_fit():
    hv2 = nodes()[1]
    assert fits(hv2, 2048, 4, None) and not fits(hv2, 2049, 1, None)
    assert not fits(hv2, 1024, 5, None)
    assert could_ever_fit(nodes(), 8192, 1) and not could_ever_fit(nodes(), 8193, 1)
    assert not could_ever_fit(nodes(hv3={"hypervisor": False}), 8000, 1)

"""vm_kvm: virtual machines on libvirt/QEMU (KVM when it really works, TCG otherwise).

Desired state (what the administrator asked) and observed state (what the node running a
VM saw) live in separate ZooKeeper keys (``keys.py``). Every node's daemon reconciles the
VMs assigned to it, or running on it, against its own libvirtd (``agent.py``); migrations
and starts of one VM are serialised by a per-VM ZooKeeper lock so a VM never runs on two
nodes. Node flush/unflush move VMs away and back (``flush.py``). The API routes
(``api.py``) and the ``pvc vm`` commands (``cli.py``) only write desired state.
"""

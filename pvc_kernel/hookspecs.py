"""Every hook contract between the kernel and its plugins.

A plugin is a class named by an entry point of the group ``pvc.plugins``; each process
that loads plugins (pvcnoded, pvcapid) makes one instance of it and registers that with
pluggy, so the instance holds the plugin's state for that daemon. Its methods marked
``@hookimpl`` implement the hooks below (a module with ``@hookimpl`` functions works too,
for a plugin without state). A plugin
imports PVC only through ``pvc_kernel.sdk``, ``pvc_api.sdk`` and ``pvc_cli.sdk``.
A hook implementation whose name is not specified here stops the daemon at
start (fail fast on typos). Each hook says who calls it, when, on which node
and what it must return. ``daemon`` is the running ``pvc_kernel.daemon.NodeDaemon``
(``daemon.config``, ``daemon.store``, ``daemon.bus``, ``daemon.node``, ``daemon.log``). The
types of what hooks receive and answer are in ``pvc_kernel.contracts``.

Hooks are called one implementation at a time by the kernel: a raising
implementation is logged with its plugin and object and does not stop the
others (see ``pvc_kernel.plugins.PluginHost.call_each``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:   # the contract types cost nothing at run time (pvc_kernel.contracts)
    from collections.abc import Callable

    from pvc_kernel.contracts import (
        ApiFace,
        ClusterFaults,
        DiskAnswer,
        DiskInfo,
        FenceInfo,
        HealthCheck,
        HypervisorSecret,
        NetworkDevice,
        NetworkPort,
        NetworkSpec,
        NodeDaemonFace,
        Progress,
        RecoverAnswer,
        StorageCutAnswer,
        TaskContextFace,
        TaskHandler,
        UnlockAnswer,
        VmDefinition,
        VmFit,
        VmIdentity,
        VmRef,
        VolumeFacts,
    )
    from pvc_kernel.events import Event
    from pvc_kernel.settings import Settings
    from pvc_kernel.state.schema import Key
    from pvc_kernel.state.store import Store

PROJECT = "pvc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- configuration and schema (every process that loads plugins) -------------------------

@hookspec(firstresult=True)
def pvc_config_settings() -> Settings:
    """Declare the keys of the plugin's own section of ``pvcnoded.yaml`` (``plugins.<name>``)
    as a ``pvc_kernel.settings.Settings``: name, type, default, help and limits of each.

    Called on the plugin alone, at start of pvcnoded and pvcapid, before anything else. The
    kernel validates the section against it (every problem stops the daemon, naming its
    key) and lists the keys in ``pvcnoded --help-config`` and docs/config.md. A plugin that
    implements no ``pvc_config_settings`` takes no settings: a section for it is an error.
    The plugin reads its values with ``Settings.values(config, name)``.
    """


@hookspec
def pvc_schema_keys() -> list[Key]:
    """Return the ZooKeeper keys this plugin uses, as ``pvc_kernel.state.schema.Key`` objects.

    Called once at start in every process, before anything touches ZooKeeper. The keys are
    registered in the one schema registry; a name clash with another plugin stops the process.
    """


@hookspec
def pvc_schema_migrations() -> list[Callable[[Store], None]]:
    """Return this plugin's schema migrations, oldest first: a list of ``step(store)``
    callables, where step n takes the plugin's keys from version n to n + 1 (0: a cluster
    that never ran the plugin). Its keys' version is kept at ``/schema/plugins/<plugin>``.

    pvcnoded runs the missing steps at start, under the schema-migration lock, after the
    kernel's own, one at a time, each followed by the bump of the plugin's version; so a
    step must be idempotent (a crash before the bump re-runs it). A cluster whose version
    for the plugin is past the list stops the daemon with a clear error.
    """


# -- node daemon lifecycle (pvcnoded, every node) ----------------------------------------

@hookspec
def pvc_node_static(daemon: NodeDaemonFace) -> dict[str, Any]:
    """Return static facts about this host to add to the node's registration (may be {}).

    The kernel adds ``liveness`` itself (the node's keepalive_interval, fence_intervals and
    suicide_intervals; see ``NodeConfig.fence_delay_for``): a plugin must not return it.
    """


@hookspec
def pvc_node_start(daemon: NodeDaemonFace) -> None:
    """The node is registered and connected: set up watches (``daemon.bus``) and local services.

    Called once per daemon start, on every node, before the first keepalive.
    """


@hookspec
def pvc_node_stop(daemon: NodeDaemonFace) -> None:
    """The daemon is shutting down (SIGTERM): stop what ``pvc_node_start`` started.

    Called once, on every node, after the node has given up the primary role. Keep it short:
    the whole shutdown must finish within 5 seconds.
    """


@hookspec
def pvc_keepalive_stats(daemon: NodeDaemonFace) -> dict[str, dict[str, Any]]:
    """Return this plugin's stats for this keepalive as ``{namespace: {stat: value}}``.

    Called on every node once per keepalive interval, from the keepalive thread; the merged
    result is written in the same ZooKeeper transaction as the keepalive timestamp. Must be
    fast (well under the interval) and JSON-serialisable.
    """


# -- coordinator role (pvcnoded, coordinators only) ------------------------------------------

@hookspec
def pvc_become_primary(daemon: NodeDaemonFace) -> None:
    """This coordinator is taking over as primary: start cluster-wide duties.

    Called from the election thread while the coordinator state is ``takeover``; the node is
    announced as primary when every implementation has returned.
    """


@hookspec
def pvc_become_secondary(daemon: NodeDaemonFace) -> None:
    """This coordinator is giving up the primary role: stop cluster-wide duties.

    Called while the coordinator state is ``relinquish`` (planned handover, shutdown or lost
    ZooKeeper session); the lock is released when every implementation has returned.
    """


# -- the event bus -----------------------------------------------------------------------

@hookspec
def pvc_event(daemon: NodeDaemonFace, event: Event) -> None:
    """Handle one event from the bus (a ``pvc_kernel.events.Event`` subclass).

    Called on the node whose bus produced the event, from a bus worker thread. Events of one
    object (``event.obj``) are delivered in order, one at a time; different objects run in
    parallel. Ignore events you do not care about (check ``isinstance``/``event.obj``).
    """


# -- tasks and node service state ------------------------------------------------------------

@hookspec
def pvc_task_handlers() -> dict[str, TaskHandler]:
    """Return ``{task type: handler}`` for this plugin's long work (e.g. ``"storage.benchmark"``).

    A handler gets a ``pvc_kernel.tasks.TaskContext`` on the task's owner node, reports with
    ``ctx.progress(current, total, message)``, checks ``ctx.cancelled`` and returns a
    JSON-serialisable result (or raises to fail the task with the exception's message).
    """


@hookspec
def pvc_node_flush(daemon: NodeDaemonFace, ctx: TaskContextFace) -> None:
    """Take this node out of service (``pvc node flush``): move or stop what runs on it.

    Called on the flushed node inside its ``node.flush`` task; report progress through
    ``ctx``, stop early when ``ctx.cancelled`` becomes true.
    """


@hookspec
def pvc_node_unflush(daemon: NodeDaemonFace, ctx: TaskContextFace) -> None:
    """Return this node to service (``pvc node ready``): bring back what flush moved away.

    Called on the node inside its ``node.unflush`` task, like ``pvc_node_flush``.
    """


# -- liveness: self-fence, rejoin, recovery of a fenced node ----------------------------------

@hookspec
def pvc_node_self_fence(daemon: NodeDaemonFace, reason: str,
                        deadline: float) -> dict[str, Any] | None:
    """Stop every workload of THIS node at once (hard), because the cluster may restart it
    elsewhere: e.g. destroy every running VM. Return what was done (JSON-able, e.g.
    ``{"destroyed": [...], "killed": [...], "left": [...]}``; ``left``: what still runs).

    Called by the kernel on the node itself, from the liveness thread: when no keepalive
    could be written for ``config.suicide_delay`` seconds and ZooKeeper cannot be reached
    now (do not use it), when the node finds that the cluster declared it ``dead``/``fenced``
    while it still runs, and before a node given up by the cluster rejoins. Until the node
    has rejoined, the kernel delivers no bus events to plugins. Must be idempotent and end
    every workload before ``deadline`` (``time.monotonic()``: when the cluster may start
    to recover them elsewhere), whatever the subsystem's daemon does (e.g. kill hung
    processes by PID).
    """


@hookspec
def pvc_node_rejoin_wait(daemon: NodeDaemonFace) -> str | None:
    """Return why this node must not rejoin the cluster yet, or None if it may.

    Called by the kernel on the node itself, about once a second, while a node the cluster
    gave up (daemon state ``dead``/``fenced``, or a self-fence) waits to rejoin: at start
    before plugins are started, or after its ZooKeeper connection came back; always after
    ``pvc_node_self_fence`` stopped its workloads. The node rejoins (state ``init`` → ``run``)
    once every implementation returns None; e.g. the fencing plugin waits until the fence
    and recovery of this node are finished and its storage access is given back.
    """


@hookspec
def pvc_node_recover(daemon: NodeDaemonFace, node: str, progress: Progress,
                     fence: FenceInfo) -> RecoverAnswer | None:
    """Restart the workloads of the dead node ``node`` on other nodes.

    Called on the primary by the fencing plugin, only after ``node`` is confirmed powered
    off or its storage access is cut, and again by the next primary if the one recovering
    died (so it must be idempotent: pick up where a previous run stopped). ``fence`` says
    how the node was fenced: ``{"powered_off": bool, "storage_cut": [names of the plugins
    whose pvc_storage_fence succeeded]}``. With ``powered_off`` false the node may still
    run: restart only workloads whose every write goes to storage a plugin in
    ``storage_cut`` says its cut covers (``pvc_storage_fence_covers``); leave the others
    stopped and say why. Report with ``progress(done, total, message)``; a true return value
    means the caller lost the fence to another coordinator: start nothing more, return soon
    (the new owner runs the recovery again). Return None if nothing of this plugin ran there,
    else ``{"recovered": [...], "stopped": [...], "failed": [...]}`` (names, with a reason
    for the stopped and failed ones); return once the recovered workloads run or failed.
    """


# -- VM disks (called by the VM plugin, answered by storage plugins) ------------------------

@hookspec(firstresult=True)
def pvc_vm_disk_prepare(daemon: NodeDaemonFace, vm: VmRef, disk: DiskInfo,
                        purpose: str) -> DiskAnswer | None:
    """Check, and make ready, one disk of a VM on this node before the VM plugin uses it.

    Called by the VM plugin on the node about to start a VM (``purpose`` ``"start"``) or to live-
    migrate it away (``"migrate"``), once per ``<disk>`` of its domain XML, from a bus worker
    while the VM's lock is held; and (``"attach"``) for a disk about to be hot-attached to a
    running VM (check it, touch no lock). ``vm`` is ``{"uuid", "name", "node"}``; ``disk`` is
    ``{"type": "file"|"block"|"network"|..., "device": "disk"|"cdrom"|..., "source": path or
    "pool/volume", "protocol": "rbd"|None, "format": "raw"|"qcow2"|None, "target": "vda",
    "bus": "virtio"|...}``. Return None if this plugin does not handle that kind of disk, else
    ``{"ok": bool, "reason": str, "shared": bool|None}``: ``ok`` false stops the operation
    (a start leaves the VM in state ``fail`` with ``reason``); ``shared`` true means every
    node reaches the same data, false that a live migration is impossible, None unknown
    (libvirt decides). A network disk's answer may add ``"libvirt": {"hosts": [{"name",
    "port"}], "username": str|None, "secret": uuid|None}``: the VM plugin fills in the
    disk's ``<host>`` and ``<auth>`` elements from it where the domain XML has none (the
    secret itself comes from ``pvc_hypervisor_secrets``). The first non-None answer counts
    and later plugins are not asked (``PluginHost.call_first``); a
    disk no plugin handles goes to libvirt as it is. Must be quick (seconds at most, no data
    copies).
    """


@hookspec
def pvc_hypervisor_secrets(daemon: NodeDaemonFace) -> list[HypervisorSecret] | None:
    """Secrets this node's hypervisor must hold so that VMs can open their disks anywhere.

    Called by the VM plugin on every node once its hypervisor is reachable and again every
    few minutes (and before a VM start), so a VM can start on, or live-migrate to, any node.
    Return None if this plugin has none, else ``[{"uuid", "usage_type", "usage_name",
    "value"}]`` with ``value`` base64 as the storage hands it out (e.g. a cephx key). The VM
    plugin defines each secret privately (never readable back) and never logs ``value``.
    Must be quick (seconds at most).
    """


@hookspec(firstresult=True)
def pvc_vm_disk_unlock(daemon: NodeDaemonFace, vm: VmRef,
                       disk: DiskInfo) -> UnlockAnswer | None:
    """Remove every storage lock held on one disk of a VM (``pvc vm flush-locks``).

    Called by the VM plugin on the VM's node inside its ``vm.flush_locks`` task, once per ``<disk>``
    of its domain XML, while the VM's lock is held and after checking that the VM should not
    run (state stop, disable, fail or mirror) unless the administrator forced it. Break the
    locks whoever holds them, live or not, and make sure a holder can no longer write (e.g.
    blocklist it). ``vm`` and ``disk`` are as in ``pvc_vm_disk_prepare``. Return None if
    this plugin does not handle that kind of disk, else ``{"ok": bool, "reason": str,
    "removed": int}`` (how many locks it removed); ``ok`` false fails the task with
    ``reason``. The first non-None answer counts and later plugins are not asked (so a second
    storage plugin breaks no lock). Must be quick (seconds at most).
    """


# -- shared storage and fencing (called by the fencing plugin, answered by storage plugins) --

@hookspec
def pvc_storage_fence(daemon: NodeDaemonFace, node: str,
                      addresses: list[str]) -> StorageCutAnswer | None:
    """Cut ``node``'s access to shared storage, so its VMs can be recovered elsewhere safely.

    Called on the primary by the fencing plugin once ``node`` is declared dead, before its VMs
    are restarted elsewhere (instead of, or in addition to, a BMC power-off). ``addresses`` are
    the node's storage client IP addresses; empty means "use what the node registered" (the
    storage plugin adds ``storage_addresses`` to the node's static data). Return None if this
    plugin has no shared storage in the cluster, else ``{"ok": bool, "reason": str,
    "addresses": [what was cut]}``; ``ok`` true means the node can no longer write. Must not
    wait for the dead node; seconds at most.
    """


@hookspec
def pvc_storage_fence_covers(daemon: NodeDaemonFace, node: str, disk: DiskInfo) -> bool | None:
    """Does this plugin's storage cut of ``node`` keep ``node`` from writing to ``disk``?

    Called on the primary by a workload plugin recovering a node whose power off was not
    confirmed (its storage cut is all that protects the data), once per disk of each of its
    VMs, and counted only for the plugins whose ``pvc_storage_fence`` of ``node`` succeeded.
    ``disk`` is as in ``pvc_vm_disk_prepare``. Return None if this plugin does not handle
    that kind of disk, True if its cut covers it (e.g. a network disk of the storage whose
    cut blocklisted the node's client addresses), False if it does not. A VM is recovered
    only if every one of its disks (CD-ROMs aside) is covered; a VM without disks never is.
    Pure and fast: no storage or ZooKeeper access.
    """


@hookspec
def pvc_storage_unfence(daemon: NodeDaemonFace, node: str,
                        addresses: list[str]) -> StorageCutAnswer | None:
    """Give ``node`` its storage access back (after it was fenced and has restarted clean).

    Called on the primary by the fencing plugin or an administrator's request; same arguments
    and answer as ``pvc_storage_fence``.
    """


# -- VMs and volumes for other plugins (answered by VM and storage plugins) ------------------
# Called on the primary by plugins that make VMs (from a task worker, e.g.). The
# first plugin that handles the request answers (``PluginHost.call_first`` with ``raising``);
# a refusal is an exception whose text is the reason an administrator reads.

@hookspec(firstresult=True)
def pvc_vm_fit(daemon: NodeDaemonFace, name: str, memory_mb: int, vcpus: int,
               node_limit: list[str] | None) -> VmFit | None:
    """Whether a VM ``name`` of ``memory_mb`` and ``vcpus`` can be defined now: the name is
    free and a node (of ``node_limit`` if given) can take it. None if this plugin runs no
    VMs."""


@hookspec(firstresult=True)
def pvc_vm_define(daemon: NodeDaemonFace, definition: VmDefinition) -> VmRef | None:
    """Define a VM (desired state only: the VM plugin's agents do the rest); its
    ``{"uuid", "name", "node"}``. Raise with the reason when it cannot be defined."""


@hookspec(firstresult=True)
def pvc_vm_set_state(daemon: NodeDaemonFace, vm: str, state: str, wait: float) -> bool | None:
    """Ask for VM ``vm`` (name or UUID) to be in ``state`` (``start``, ``stop``, ...); True
    when it is (or, with ``wait`` 0, when asked). With ``wait`` > 0, wait up to that many
    seconds and raise with the reason if the VM failed to get there."""


@hookspec(firstresult=True)
def pvc_vm_undefine(daemon: NodeDaemonFace, vm: str) -> bool | None:
    """Stop VM ``vm`` if it runs and remove its definition (not its disks); True when done,
    False when there was no such VM."""


@hookspec(firstresult=True)
def pvc_vm_by_mac(daemon: NodeDaemonFace, mac: str) -> VmIdentity | None:
    """The VM with a NIC of MAC address ``mac`` (lower case, colons), or None."""


@hookspec(firstresult=True)
def pvc_vm_modify(daemon: NodeDaemonFace, vm: str, xml: str) -> bool | None:
    """Replace the XML of VM ``vm`` as ``PUT /vm/<vm>`` does (same checks; a running VM
    gets it at its next start). Raise with the reason when refused."""


@hookspec(firstresult=True)
def pvc_vm_names(daemon: NodeDaemonFace, tag: str | None) -> list[str] | None:
    """The names of the VMs (only those with tag ``tag`` when given), sorted; None if this
    plugin runs no VMs."""


@hookspec(firstresult=True)
def pvc_vm_volumes(daemon: NodeDaemonFace, vm: str) -> dict[str, Any] | None:
    """VM ``vm`` (name or UUID) as a copy of it needs it: ``{uuid, name, node, state,
    running_on (node or None), xml, meta, volumes: ["pool/name", ...]}``, the volumes being
    its disks that a ``pvc_volume_*`` plugin keeps, in XML order; None if no such VM."""


@hookspec(firstresult=True)
def pvc_volume_facts(daemon: NodeDaemonFace) -> VolumeFacts | None:
    """How a VM's disk XML reaches this storage (see ``VolumeFacts``); None if this plugin
    keeps no volumes."""


@hookspec(firstresult=True)
def pvc_volume_free(daemon: NodeDaemonFace, pool: str) -> int | None:
    """Bytes a new volume may take in ``pool`` (raise if there is no such pool)."""


@hookspec(firstresult=True)
def pvc_volume_create(daemon: NodeDaemonFace, pool: str, name: str, size_bytes: int,
                      source: str | None) -> bool | None:
    """Make volume ``pool/name``: empty of ``size_bytes``, or (``source`` given) a full copy
    of volume ``pool/source``. Raise with the reason when it cannot (it exists, no room)."""


@hookspec(firstresult=True)
def pvc_volume_remove(daemon: NodeDaemonFace, pool: str, name: str) -> bool | None:
    """Remove volume ``pool/name``; True when removed, False when it did not exist. Raise
    while something uses it."""


@hookspec(firstresult=True)
def pvc_volume_blockdev(daemon: NodeDaemonFace, pool: str, name: str) -> dict[str, Any] | None:
    """The volume as a QEMU ``--blockdev`` object (without ``node-name``), for tools that
    read or write it on this node without a kernel driver: ``qemu-storage-daemon``,
    ``qemu-img`` (as ``json:{...}``)."""


@hookspec(firstresult=True)
def pvc_volume_snapshot(daemon: NodeDaemonFace, pool: str, name: str,
                        snapshot: str) -> bool | None:
    """Snapshot volume ``pool/name`` as ``snapshot`` (point in time of the volume's data).
    Raise with the reason when it cannot (no such volume, the snapshot exists)."""


@hookspec(firstresult=True)
def pvc_volume_snapshot_remove(daemon: NodeDaemonFace, pool: str, name: str,
                               snapshot: str) -> bool | None:
    """Remove snapshot ``pool/name@snapshot``; True when removed, False when it did not
    exist. Raise while something depends on it (a clone)."""


@hookspec(firstresult=True)
def pvc_volume_rollback(daemon: NodeDaemonFace, pool: str, name: str,
                        snapshot: str) -> bool | None:
    """Make volume ``pool/name`` hold the data of its ``snapshot`` again. Raise while a
    client (a running VM) uses the volume, or when there is no such snapshot."""


@hookspec(firstresult=True)
def pvc_volume_export(daemon: NodeDaemonFace, pool: str, name: str, snapshot: str,
                      since: str | None, path: str) -> int | None:
    """Write the data of ``pool/name@snapshot`` to the new file ``path`` on this node: the
    whole volume, or with ``since`` only what changed after that older snapshot. The bytes
    written; raise with the reason (no such snapshot, ``path`` exists) and leave no file."""


@hookspec(firstresult=True)
def pvc_volume_import(daemon: NodeDaemonFace, pool: str, name: str, path: str,
                      since: str | None, snapshot: str) -> bool | None:
    """The reverse of ``pvc_volume_export``: a new volume ``pool/name`` from a whole export,
    or (``since`` given) a diff applied to the existing volume, which must hold snapshot
    ``since``. Afterwards the volume holds ``snapshot``. Raise with the reason."""


# -- client networks (one network model, shared by the network plugins) -------------------

@hookspec
def pvc_network_types() -> dict[str, str]:
    """Declare the network types (``nettype``) this plugin builds on nodes, each with one line
    about it, e.g. ``{"managed": "an overlay with gateway, DHCP and DNS on the primary"}``.

    Called in every process that loads plugins. The plugin that stores networks accepts only
    declared types, and refuses networks of a type that two plugins declare (a 400 naming
    both); each node builds a network only through the plugin that declared its type. A
    network's record is a ``pvc_kernel.contracts.NetworkSpec``, read by key name
    (``network``, ``vni=``).
    """


@hookspec
def pvc_network_gateway_addresses(daemon: NodeDaemonFace, network: NetworkSpec) -> list[str]:
    """IPv4 addresses (``address/prefix``) a plugin serves to managed network
    ``network``'s guests through its gateway, e.g. a metadata service's
    ``169.254.169.254/32``.

    Called on the primary by the network plugin that raises the network's gateways, each
    time it checks them; the addresses are held on the primary (not on the bridges, where
    each network's DNS server binds every address), announced on the networks' bridges
    when they move, and dropped when the node stops being primary. Must be quick (no I/O).
    """


@hookspec(firstresult=True)
def pvc_network_port(daemon: NodeDaemonFace, network: NetworkSpec) -> NetworkPort | None:
    """Make, or find, this node's uplink device of ``network``: the device its bridge is
    built on. Return None if ``network["nettype"]`` is not a type this plugin declared.

    Called by the plugin that stores networks, on every node, from its reconcile (at start,
    when networks or nodes change, and every minute): so it must be idempotent and must not
    touch a device that is already right (a daemon restart must not flap a link). Answer
    ``{"port": name, "max_mtu": int}``, or ``{"error": text}`` when the device cannot be made
    (reported as the network's state on this node). Must be quick (no waiting on peers).
    """


@hookspec(firstresult=True)
def pvc_network_port_remove(daemon: NodeDaemonFace, network: NetworkSpec) -> bool | None:
    """Remove this node's uplink device of a network that was removed (after its bridge).
    Return None if the type is not this plugin's, else whether a device was removed. A device
    this plugin did not create (an administrator's, used as it was) is left in place.
    """


@hookspec
def pvc_network_devices(store: Store, devices: list[str]) -> dict[str, NetworkDevice]:
    """Describe the host devices among ``devices`` that this plugin's networks provide (VM
    NICs attach to them): ``{device: NetworkDevice}``; leave out the devices it does not
    know (an administrator's own bridge). Every plugin's answer is merged.

    Called by the VM plugin in pvcapid (define/modify refuse a NIC on a device whose answer
    has ``error``) and on nodes (a VM is placed only on ``nodes`` of each of its devices).
    Must be quick: ZooKeeper reads only.
    """


@hookspec
def pvc_network_devices_stamp(store: Store) -> Any:
    """Return a value that changes whenever this plugin's ``pvc_network_devices`` answers
    may change (e.g. ``store.generation`` of its viewed networks key), or None when it
    cannot tell. Callers that keep NIC descriptions across requests (the VM list in
    pvcapid) build them again when any plugin's stamp changes, and every time on a None.
    """


@hookspec
def pvc_network_users(store: Store, devices: list[str]) -> dict[str, list[str]]:
    """Name the VMs this plugin runs that use any of ``devices``: ``{device: [vm name]}``
    (only devices with users). Every plugin's answer is merged. Called by the plugin that
    stores networks before removing one (a network in use is refused unless forced). Must be
    quick: ZooKeeper reads only.
    """


# -- health (pvcnoded, every node) --------------------------------------------------------

@hookspec
def pvc_health_checks(daemon: NodeDaemonFace) -> list[HealthCheck]:
    """Return this plugin's node health checks (``contracts.HealthCheck`` instances; may be []).

    Called once on every node when the health plugin starts, after ``pvc_node_start``. The
    health plugin sets each check up, runs it every interval in a bounded pool with a time-out,
    and sums the deltas into the node's health (100 − Σ deltas); see docs/health.md.
    """


@hookspec
def pvc_cluster_faults(daemon: NodeDaemonFace) -> ClusterFaults:
    """Return the cluster-level faults of this plugin that hold now (``ClusterFaults``).

    Called on the primary only, once per health round (``plugins.health.interval``). The
    health plugin raises or refreshes each, clears this plugin's earlier ones (by prefix) that
    are not returned any more, and raises none in maintenance mode. Must be quick: a few
    pipelined ZooKeeper reads (e.g. the nodes' keepalive stats), never one per VM.
    """


# -- API (pvcapid) -----------------------------------------------------------------------

@hookspec
def pvc_api_routes(api: ApiFace) -> None:
    """Add this plugin's REST routes to the API (``api.add_route(...)``, see ``pvc_api``).

    Called once in every pvcapid process at start.
    """


@hookspec
def pvc_api_view_keys() -> list[str]:
    """Return schema key names (without placeholders) whose whole subtrees pvcapid keeps in
    its watch-maintained view (``Store.use_view``), e.g. ``["vms", "vm_names"]``.

    Called once in every pvcapid process at start. Reads under these keys are then answered
    from memory, still seeing every write completed before them; name the subtrees the API
    lists or scans, not ones written many times a second that it rarely reads.
    """


@hookspec
def pvc_api_node(stats: dict[str, Any]) -> dict[str, Any]:
    """Return this plugin's fields of a Node object, from that node's keepalive ``stats``.

    Called in pvcapid for every node of every node listing, with the node's merged keepalive
    stats (``{namespace: {...}}``, as written by ``pvc_keepalive_stats``). Return Node fields
    to merge in recursively, e.g. ``{"domains_count": 2, "memory": {"allocated": 256}}``, or
    ``{}``. Must be pure and fast: no ZooKeeper or host access.
    """


@hookspec
def pvc_api_metrics(api: ApiFace, group: str) -> list[Any]:
    """Return this plugin's Prometheus metric families of ``group`` (``health``,
    ``resource``, ``ceph`` or ``zookeeper``) as ``prometheus_client.core`` families, or [].

    Called in pvcapid for a scrape of ``/metrics`` (every group) or ``/metrics/<group>``, at
    most once per ``api.metrics_cache`` seconds, inside one view snapshot. Name families
    ``pvc_<subsystem>_...`` (docs/metrics.md lists them); read the view, not the hosts, when
    you can.
    """


@hookspec(firstresult=True)
def pvc_api_volume_free(api: ApiFace, pool: str) -> int | None:
    """Bytes a new volume may take in ``pool``, read in pvcapid (e.g. to refuse an upload
    that cannot fit before anything is made). Raise with the reason when there is no such
    pool; None if this plugin keeps no volumes. Call with ``call_first(..., raising=True)``.
    """


@hookspec
def pvc_api_status(api: ApiFace) -> dict[str, Any]:
    """Return this plugin's part of the cluster status (``GET /api/v1/status``).

    Called in pvcapid on every ``GET /status`` request, after the core fields are read; ``api``
    is the running ``pvc_api.app.Api`` (``api.store``, ``api.config``). Return a dict of
    ClusterStatus fields; it is merged into the answer recursively (dicts are updated key by key,
    other values replace the core value), e.g. ``{"vms": {"total": 3, "start,ready": 3},
    "detail": {"vm": [...]}}``. Must be fast (one ZooKeeper round trip or so) and keep the types
    of the ClusterStatus schema. A raising implementation is logged and left out.
    """

#!/usr/bin/env bash
# Install everything and bring up the demo lab: a real 3-node PVC cluster in network namespaces,
# then define and start a small VM on it. Extra arguments go to `pvc-lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
lab=.venv/bin/pvc-lab
$lab up "$@"

echo
echo "== a managed network (VXLAN + BGP EVPN between the nodes; gateway and DHCP on the primary)"
if ! $lab admin pvc network info demo >/dev/null 2>&1; then
  $lab admin pvc network add 100 -d demo -p managed -i 10.100.0.0/24 -g 10.100.0.1 \
    --dhcp --dhcp-start 10.100.0.100 --dhcp-end 10.100.0.199
fi
for _ in $(seq 60); do       # every node reports its bridge up within a second or two
  $lab admin pvc network info demo -f json | .venv/bin/python -c 'import json, sys
nodes = json.load(sys.stdin)["nodes"]
sys.exit(not (nodes and all(r.get("state") == "up" for r in nodes.values())))' && break
  sleep 0.5
done
$lab admin pvc network info demo

echo
echo "== a demo VM (a tiny Linux guest under QEMU) on it, taking its address by DHCP"
if ! $lab admin pvc vm info demo1 >/dev/null 2>&1; then
  xml=$(mktemp --suffix=.xml)
  $lab vm-xml demo1 --nic vmbr100 --dhcp --ping 10.100.0.1 > "$xml"
  $lab admin pvc vm define "$xml"
  rm -f "$xml"
fi
$lab admin pvc vm start demo1 --wait
echo "waiting for demo1's DHCP lease..."
for _ in $(seq 120); do
  $lab admin pvc vm info demo1 -f json | .venv/bin/python -c 'import json, sys
sys.exit(not any(n.get("address") for n in json.load(sys.stdin)["networks"]))' && break
  sleep 1
done
$lab admin pvc vm list
$lab admin pvc vm info demo1 | grep NIC || true
$lab admin pvc network dhcp list demo
echo
echo "== the provisioner: a VM from a profile whose script makes its RBD disk bootable"
if $lab admin pvc storage status 2>/dev/null | grep -q HEALTH; then
  read -r kernel initrd < <(.venv/bin/python -c 'from pvc_lab.guest import build
i = build(); print(i.bzimage, i.initrd)')
  p="$lab admin pvc provisioner"
  $lab admin pvc storage pool list "^demo$" 2>/dev/null | grep -qw demo ||
    $lab admin pvc storage pool add demo 32 --replcfg copies=3,mincopies=2
  if ! $p profile list "^demo$" -f json | grep -q "\"name\""; then
    $p template system add demo -u 1 -m 128 --serial
    $p template network add demo && $p template network vni add demo 100
    $p template storage add demo && $p template storage disk add demo sda -p demo -s 1
    $p script add labboot plugins/provisioner/examples/lab_boot.py
    $p profile add demo -s demo -n demo -t demo -x labboot -a "kernel=$kernel" \
      -a "initrd=$initrd" -a "cmdline=dhcp=1 pingtarget=10.100.0.1"
  fi
  $lab admin pvc vm info demo2 >/dev/null 2>&1 || $p create demo2 demo --wait
  $lab admin pvc vm info demo2
else
  echo "(no Ceph in this lab: run 'bash scripts/demo.sh --storage' for this step)"
fi

echo
echo "The lab is up. Try:"
echo "  $lab status"
echo "  $lab admin pvc node list              # the pvc CLI, run inside the lab network"
echo "  $lab admin pvc vm migrate demo1 --wait  # live migration to another node"
echo "  $lab admin pvc vm log demo1             # the guest's serial console (it pings its gateway)"
echo "  $lab admin pvc network list             # networks; pvc network acl|dhcp ... too"
echo "  $lab down                               # remove every namespace and process of the lab"

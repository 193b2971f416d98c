#!/usr/bin/env bash
# Install everything and bring up the demo lab: a real 3-node PVC cluster in network namespaces,
# then define and start a small VM on it. Extra arguments go to `pvc-lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
lab=.venv/bin/pvc-lab
$lab up "$@"

echo
echo "== a demo VM (a tiny Linux guest under QEMU)"
if ! $lab admin pvc vm info demo1 >/dev/null 2>&1; then
  xml=$(mktemp --suffix=.xml)
  $lab vm-xml demo1 > "$xml"
  $lab admin pvc vm define "$xml"
  rm -f "$xml"
fi
$lab admin pvc vm start demo1 --wait
$lab admin pvc vm list
echo
echo "The lab is up. Try:"
echo "  $lab status"
echo "  $lab admin pvc node list              # the pvc CLI, run inside the lab network"
echo "  $lab admin pvc vm migrate demo1 --wait  # live migration to another node"
echo "  $lab admin pvc vm log demo1             # the guest's serial console"
echo "  $lab down                               # remove every namespace and process of the lab"

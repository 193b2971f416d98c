#!/usr/bin/env bash
# Install everything and bring up the demo lab: a real 3-node PVC cluster in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/pvc-lab up "$@"
echo
echo "The lab is up. Try:"
echo "  .venv/bin/pvc-lab status"
echo "  .venv/bin/pvc-lab admin pvc node list  # the pvc CLI, run inside the lab network"
echo "  .venv/bin/pvc-lab down                 # remove every namespace and process of the lab"

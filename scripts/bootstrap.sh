#!/usr/bin/env bash
# Install every Debian and PyPI dependency of PVC and its lab into ./.venv.
# Idempotent: a second run only checks. Needs root (apt-get, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  python3 python3-venv python3-dev gcc       # the project's venv is built on Debian's Python 3.11
  zookeeper default-jre-headless              # real ZooKeeper servers in the lab and integration tests
  iproute2 procps util-linux                  # network namespaces, process control, unshare
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system python3-libvirt  # vm_kvm
  qemu-system-x86 qemu-utils                  # the lab's guests (TCG when KVM is unusable)
  busybox-static cpio bindfs fuse3            # lab guest initramfs; shared storage per node
  syslinux syslinux-common mtools dosfstools  # lab guest disk that boots by itself (VMs on RBD)
  ceph-mon ceph-mgr ceph-osd ceph-common       # storage_ceph: Ceph 16 daemons + CLI (lab, tests)
  python3-rados python3-rbd fio               # storage_ceph bindings; benchmark (fio's rbd engine)
  qemu-block-extra                            # QEMU's rbd driver for VM disks on Ceph
  ipmitool                                    # talks to the lab's simulated BMCs (tests, admins)
  openssl                                     # the TLS-front test makes a throw-away CA
  lvm2                                        # storage_ceph: the osd-db volume group (OSD DB LVs)
  iputils-ping iputils-arping                 # network tests: pings across namespaces and guests
  frr                                         # net_vxlan: zebra + bgpd per node for BGP EVPN
  dnsmasq-base                                # managed networks: DHCP/DNS/RA on the primary
  nftables                                    # managed networks: per-network firewall and ACLs
  prometheus                                  # metrics tests: a real Prometheus and promtool
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  for try in 1 2 3; do                       # another apt may hold the dpkg lock for a while
    if apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
      break
    fi
    [ "$try" = 3 ] && { echo "bootstrap: apt-get failed" >&2; exit 1; }
    sleep 10
  done
fi
# Debian's prometheus package enables a server on every address where systemd runs; the
# tests start their own Prometheus inside a lab namespace, so none may run here.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled prometheus >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# Debian's python3 so that Debian-built bindings (libvirt, rados, rbd) are importable from the venv.
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.pvc-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ tests/sample_plugin/pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  # A third-party plugin package, installed the way an operator would install one.
  .venv/bin/pip install -q -e tests/sample_plugin
  touch "$stamp"
fi
echo "bootstrap: ready ($(.venv/bin/python --version))"

#!/usr/bin/env bash
# Debian packages the project needs beyond Python: the venv module, headless Chromium for
# browser tests, vigra (the reference for filter tests and benchmarks, Debian's python3
# only), nginx (the static-file peer in benchmarks/serve.py) and munge + Slurm (the
# batch-engine tests start a one-node cluster), slurmrestd + the JWT plugin (the slurm-rest
# engine's tests), Swift + memcached (object-storage tests start a single-node one) and cloud-init
# (validates the openstack/ user-data). Installs only what is
# missing, so a prepared machine needs no network.
set -euo pipefail
packages=(python3-venv chromium python3-vigra nginx munge slurmctld slurmd slurm-client
          slurmrestd slurm-wlm-jwt-plugin swift swift-proxy swift-object swift-container
          swift-account memcached cloud-init)
# ILASTIK_WEB_DEPS=runtime: only what a deployed server needs (openstack/ cloud-init uses
# it), without the daemons the tests start.
if [ "${ILASTIK_WEB_DEPS:-all}" = runtime ]; then
  packages=(python3-venv git nginx ssl-cert)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run this script as root to install them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs what running and testing the shim needs on Debian: containerd
# and runc (runc for the native peer in benchmarks). Does nothing when
# they are already there.
set -euo pipefail

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v script >/dev/null || missing+=(bsdutils)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: need root to install ${missing[*]} (run as root or install them yourself)" >&2
    exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Installs what building, running and testing the shim needs on Debian:
# libseccomp-dev (the shim links libseccomp to apply seccomp profiles),
# containerd and runc (runc for the native peer in benchmarks and tests),
# busybox-static (the busybox test image copies its /bin/busybox),
# containernetworking-plugins (the CRI tests' pod network uses
# /usr/lib/cni/loopback), protobuf-compiler (protoc builds the CRI
# protos of the k8s-cri crate and containerd's API), curl and wrk (the
# HTTP tests' client and the HTTP benchmark's load), python3-venv (the
# venv that make programs installs ziglang and componentize-py into).
# Does nothing when they are already there.
set -euo pipefail

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v script >/dev/null || missing+=(bsdutils)
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
# Debian's dynamically linked `busybox` package installs /bin/busybox too,
# and it would not start in an image without libraries: ask for the package.
[ "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null)" = installed ] ||
    missing+=(busybox-static)
[ -x /usr/lib/cni/loopback ] || missing+=(containernetworking-plugins)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
# The HTTP tests' client, and the load generator of `make bench`'s HTTP row.
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)
# make programs installs ziglang and componentize-py into a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv)
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

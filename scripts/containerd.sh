#!/usr/bin/env bash
# A private containerd for the demo and the benchmarks: its own root,
# state and socket under a project-local folder, never the system one.
#
#   scripts/containerd.sh start DIR SHIM_DIR   start it (if not running), print its socket
#   scripts/containerd.sh stop DIR             stop it and unmount what it left
set -euo pipefail

action=${1:?usage: containerd.sh start|stop DIR [SHIM_DIR]}
dir=$(realpath -m "${2:?missing DIR}")
sock="$dir/containerd.sock"

case "$action" in
start)
    shim_dir=$(realpath "${3:?missing SHIM_DIR}")
    mkdir -p "$dir"
    if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
        echo "$sock"
        exit 0
    fi
    cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML
    # containerd finds runtime shims on its PATH.
    PATH="$shim_dir:$PATH" setsid containerd --config "$dir/config.toml" \
        </dev/null >"$dir/containerd.log" 2>&1 &
    echo $! > "$dir/containerd.pid"
    for _ in $(seq 100); do
        if ctr --address "$sock" version >/dev/null 2>&1; then
            echo "$sock"
            exit 0
        fi
        sleep 0.1
    done
    echo "containerd did not start; see $dir/containerd.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$dir/containerd.pid" ]; then
        pid=$(cat "$dir/containerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$dir/containerd.pid"
    fi
    # Unmount whatever is left below the folder, deepest first.
    # (grep finds nothing after a clean stop; that is not a failure.)
    { grep -F " $dir/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    ;;
*)
    echo "unknown action $action" >&2
    exit 2
    ;;
esac

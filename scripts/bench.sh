#!/usr/bin/env bash
# make bench: this shim beside runc, in one run, on a private containerd.
#
#   bench.sh SHIM IMAGES_DIR WORK_DIR
#
# Prints a table: `ctr run --rm` of a hello (Wasm under this shim, a
# static native hello under runc), sequential, min / median / p99; and
# the PSS of shims plus container processes with 1 and with 10 idle
# containers; the churn rate, `ctr run --rm` eight at a time
# (BENCH_CHURN cycles, default 200). Two rows run native containers under
# both: the static native hello, and 10 idle native containers. BENCH_RUNS sets the
# number of runs (default 20). The pod rows come from shim/benches/pods.rs
# (pods through the CRI API, under this shim and under runc; BENCH_POD_RUNS,
# default 10). The rows of real programs (a Python component, the big
# module, a Python wasi:http server) come from bench-programs.sh, beside
# the wasmtime CLI.
set -euo pipefail

shim=$(realpath "${1:?usage: bench.sh SHIM IMAGES_DIR WORK_DIR}")
images=$(realpath "${2:?missing IMAGES_DIR}")
work=$(realpath -m "${3:?missing WORK_DIR}")
runs=${BENCH_RUNS:-20}
here=$(dirname "$0")
ours=io.containerd.wasmtime.v1
theirs=io.containerd.runc.v2
ref=docker.io/wasmtime-shim-test

"$here/containerd.sh" stop "$work" >/dev/null 2>&1 || true
sock=$("$here/containerd.sh" start "$work" "$(dirname "$shim")")
ctr=(ctr --address "$sock" --namespace bench)

cleanup() {
    for id in $("${ctr[@]}" task ls -q 2>/dev/null); do
        "${ctr[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do
        "${ctr[@]}" task delete "$id" >/dev/null 2>&1 || true
        "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
    "$here/containerd.sh" stop "$work" >/dev/null 2>&1 || true
}
trap cleanup EXIT

for image in hello native-hello sleep native-sleep; do
    "${ctr[@]}" images import --all-platforms "$images/$image.tar" >/dev/null
done

# Prints min, median and p99 (ms) of the microseconds on stdin.
stats() {
    sort -n | awk '{ v[NR] = $1 } END {
        p99 = int((NR * 99 + 99) / 100); if (p99 > NR) p99 = NR
        med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.1f / %.1f / %.1f", v[1] / 1000, med / 1000, v[p99] / 1000 }'
}

# Times `ctr run --rm` of an image under a runtime, one line per run (µs).
time_runs() {
    local runtime=$1 image=$2 tag=$3 i start end
    # One untimed run warms the page cache and containerd's snapshot.
    "${ctr[@]}" run --rm --runtime "$runtime" "$image" "warm-$tag" >/dev/null
    for i in $(seq "$runs"); do
        start=$(date +%s%N)
        "${ctr[@]}" run --rm --runtime "$runtime" "$image" "$tag-$i" >/dev/null
        end=$(date +%s%N)
        echo $(((end - start) / 1000))
    done
}

# Cycles per second of `ctr run --rm` of an image under a runtime,
# BENCH_CHURN cycles (default 200) eight at a time.
churn_rate() {
    local runtime=$1 image=$2 tag=$3 n=${BENCH_CHURN:-200} start end
    start=$(date +%s%N)
    seq "$n" | xargs -P 8 -I{} "${ctr[@]}" run --rm --runtime "$runtime" "$image" "$tag-{}" >/dev/null
    end=$(date +%s%N)
    awk -v n="$n" -v ns=$((end - start)) 'BEGIN { printf "%.1f", n / (ns / 1e9) }'
}

# PSS in kB of the shims and container processes of the running tasks
# whose id starts with the prefix.
pss() {
    local prefix=$1 pids="" pid total=0 kb
    for pid in $("${ctr[@]}" task ls | awk -v p="$prefix" '$1 ~ "^"p { print $2 }'); do
        pids="$pids $pid $(awk '{ print $4 }' "/proc/$pid/stat")"
    done
    for pid in $(echo "$pids" | tr ' ' '\n' | sort -u); do
        kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + kb))
    done
    echo "$total"
}

# Starts idle containers up to `count` (with the args after it, if any)
# and prints their PSS (kB).
idle() {
    local runtime=$1 image=$2 prefix=$3 count=$4 i
    shift 4
    for i in $(seq "$count"); do
        "${ctr[@]}" task ls -q | grep -qx "$prefix-$i" && continue
        "${ctr[@]}" run -d --runtime "$runtime" "$image" "$prefix-$i" "$@" >/dev/null
    done
    sleep 1
    pss "$prefix-"
}

stop_all() {
    local prefix=$1 id
    for id in $("${ctr[@]}" task ls -q | grep "^$prefix-"); do
        "${ctr[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $("${ctr[@]}" containers ls -q | grep "^$prefix-"); do
        "${ctr[@]}" task delete "$id" >/dev/null 2>&1 || true
        "${ctr[@]}" containers delete "$id" >/dev/null
    done
}

mb() { awk -v kb="$1" -v n="${2:-1}" 'BEGIN { printf "%.1f", kb / 1024 / n }'; }

echo "running benchmarks ($runs runs each) on $(containerd --version | awk '{print $3}'), $(nproc) cores..." >&2
ours_run=$(time_runs "$ours" "$ref/hello:latest" wasm | stats)
theirs_run=$(time_runs "$theirs" "$ref/native-hello:latest" native | stats)
ours_native_run=$(time_runs "$ours" "$ref/native-hello:latest" ours-native | stats)
ours_churn=$(churn_rate "$ours" "$ref/hello:latest" wasm-churn)
theirs_churn=$(churn_rate "$theirs" "$ref/native-hello:latest" native-churn)

ours_1=$(idle "$ours" "$ref/sleep:latest" wasm-idle 1)
ours_10=$(idle "$ours" "$ref/sleep:latest" wasm-idle 10)
stop_all wasm-idle
theirs_1=$(idle "$theirs" "$ref/native-sleep:latest" native-idle 1)
theirs_10=$(idle "$theirs" "$ref/native-sleep:latest" native-idle 10)
stop_all native-idle
ours_native_10=$(idle "$ours" "$ref/native-sleep:latest" ours-native-idle 10)
stop_all ours-native-idle
echo "running the program benchmarks (Python component, big module, HTTP)..." >&2
# shellcheck source=bench-programs.sh
. "$here/bench-programs.sh"
row() { printf '| %-44s | %-22s | %-22s |\n' "$1" "$2" "$3"; }
program_table=$(program_rows)
echo "running the pod benchmarks (${BENCH_POD_RUNS:-10} runs each)..." >&2
pod_rows=$(cd "$here/.." && cargo bench -q -p containerd-shim-wasmtime --bench pods -- \
    "${BENCH_POD_RUNS:-10}" | grep '^|')

printf '\n| %-44s | %-22s | %-22s |\n' "measure" "wasmtime shim" "runc (static native)"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..24})"
printf '| %-44s | %-22s | %-22s |\n' "ctr run --rm hello, min / median / p99 (ms)" "$ours_run" "$theirs_run"
printf '| %-44s | %-22s | %-22s |\n' "churn: ctr run --rm at concurrency 8 (cycles/s)" "$ours_churn" "$theirs_churn"
printf '| %-44s | %-22s | %-22s |\n' "PSS, 1 idle container (MB)" "$(mb "$ours_1")" "$(mb "$theirs_1")"
printf '| %-44s | %-22s | %-22s |\n' "PSS, 10 idle containers (MB)" "$(mb "$ours_10")" "$(mb "$theirs_10")"
printf '| %-44s | %-22s | %-22s |\n' "PSS per container with 10 running (MB)" "$(mb "$ours_10" 10)" "$(mb "$theirs_10" 10)"
printf '| %-44s | %-22s | %-22s |\n' "native hello, min / median / p99 (ms)" "$ours_native_run" "$theirs_run"
printf '| %-44s | %-22s | %-22s |\n' "PSS, 10 idle native containers (MB)" "$(mb "$ours_native_10")" "$(mb "$theirs_10")"
while IFS='|' read -r _ what ours_cell theirs_cell _; do
    printf '| %-44s | %-22s | %-22s |\n' "$(echo $what)" "$(echo $ours_cell)" "$(echo $theirs_cell)"
done <<<"$pod_rows"
echo "$program_table"

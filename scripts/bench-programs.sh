#!/usr/bin/env bash
# make bench, the rows of real programs: sourced by bench.sh, which has
# started the private containerd ($sock, ${ctr[@]}, $work) and defined
# stats, pss, idle, stop_all and mb. The peer column is the wasmtime CLI
# of the same wasmtime version (.dev/wasmtime, `make wasmtime-cli`) on the
# same files: `wasmtime run` without its cache, `wasmtime serve -S cli`
# (the component imports wasi:cli/environment, as componentize-py's do).
#
# Rows: first and second start of the Python CLI component and of the big
# module (the cache emptied before each first start), the PSS of 1 and 5
# idle Python components (the CLI's with its own cache warm, measured once
# they use no CPU), and HTTP requests/s of the Python wasi:http
# component (wrk on loopback, BENCH_HTTP_ROUNDS rounds of BENCH_HTTP_SECONDS
# each, default 3 of 10, alternating with the CLI; medians).

wasmtime_cli=${WASMTIME_CLI:-$here/../.dev/wasmtime/bin/wasmtime}
cache_dir="$work/state/io.containerd.wasmtime.v1/cache"
first_runs=${BENCH_FIRST_RUNS:-3}

for image in python-cli python-http big; do
    "${ctr[@]}" images import --all-platforms "$images/$image.tar" >/dev/null
done

# The module of an image, for the wasmtime CLI: the very bytes the image holds.
program() {
    "$here/../target/release/test-images" --write-module "$1" "$work/$1.wasm" && echo "$work/$1.wasm"
}

# Times `ctr run --rm` of an image (µs), the cache emptied first when
# asked; one line per run.
time_start() {
    local image=$1 tag=$2 cold=$3 count=$4 i start end
    shift 4
    for i in $(seq "$count"); do
        [ "$cold" = cold ] && rm -rf "$cache_dir"
        start=$(date +%s%N)
        "${ctr[@]}" run --rm --runtime "$ours" "$ref/$image:latest" "$tag-$i" "$@" >/dev/null
        end=$(date +%s%N)
        echo $(((end - start) / 1000))
    done
}

# Times the wasmtime CLI running a file without its cache (µs).
time_cli() {
    local file=$1 count=$2 i start end
    shift 2
    for i in $(seq "$count"); do
        start=$(date +%s%N)
        "$wasmtime_cli" run -C cache=n "$file" "$@" >/dev/null
        end=$(date +%s%N)
        echo $(((end - start) / 1000))
    done
}

median_ms() { stats | awk -F' / ' '{ print $2 }'; }

start_rows() {
    local image=$1 label=$2 first second cli="n/a" file
    shift 2
    first=$(time_start "$image" "$image-first" cold "$first_runs" "$@" | median_ms)
    # One warm-up start after the last cold one wrote the entry.
    second=$(time_start "$image" "$image-second" warm "$runs" "$@" | median_ms)
    file=$(program "$image")
    if [ -x "$wasmtime_cli" ] && [ -n "$file" ] && [ -f "$file" ]; then
        cli=$(time_cli "$file" "$first_runs" "$@" | median_ms)
    fi
    row "$label, first start, median (ms)" "$first" "$cli (wasmtime run, no cache)"
    row "$label, second start, median (ms)" \
        "$second ($(awk -v a="$first" -v b="$second" 'BEGIN { printf "%.0f", a / b }')x faster)" ""
}

# Waits until a process has stopped using CPU (its compile and start are
# over): its user and system time unchanged for half a second.
settle() {
    local pid=$1 before=-1 now
    for _ in $(seq 600); do
        now=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || return 0
        [ "$now" = "$before" ] && return 0
        before=$now
        sleep 0.5
    done
}

# PSS (kB) of `count` idle wasmtime CLI processes running the file, with
# the CLI's own cache warm (a first run fills it), as ours is.
cli_idle() {
    local file=$1 count=$2 pids=() pid total=0 kb
    shift 2
    "$wasmtime_cli" run "$file" >/dev/null 2>&1
    for _ in $(seq "$count"); do
        "$wasmtime_cli" run "$file" "$@" >/dev/null 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        settle "$pid"
    done
    for pid in "${pids[@]}"; do
        kb=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + kb))
    done
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "$total"
}

# Requests/s that wrk gets from a server on loopback.
req_per_s() {
    wrk -t 1 -c 8 -d "${BENCH_HTTP_SECONDS:-10}s" "http://127.0.0.1:$1/bench" |
        awk '/^Requests\/sec/ { print $2 }'
}

wait_http() {
    local i
    for i in $(seq 600); do
        curl -s -m 2 -o /dev/null "http://127.0.0.1:$1/ready" && return 0
        sleep 0.1
    done
    echo "bench: nothing answers on port $1" >&2
    return 1
}

program_rows() {
    local py_cli py_http one five cli_one="n/a" cli_five="n/a" ours_rps theirs_rps="n/a" ratio="n/a" pid=""
    py_cli=$(program python-cli)
    py_http=$(program python-http)

    start_rows python-cli "Python component (18 MB)"
    start_rows big "big module (13 MB)"

    one=$(idle "$ours" "$ref/python-cli:latest" py-idle 1 /python-cli.wasm sleep 3600)
    five=$(idle "$ours" "$ref/python-cli:latest" py-idle 5 /python-cli.wasm sleep 3600)
    stop_all py-idle
    if [ -x "$wasmtime_cli" ]; then
        cli_one=$(mb "$(cli_idle "$py_cli" 1 sleep 3600)")
        cli_five=$(mb "$(cli_idle "$py_cli" 5 sleep 3600)")
    fi
    row "PSS, 1 idle Python component (MB)" "$(mb "$one")" "$cli_one (wasmtime run)"
    row "PSS, 5 idle Python components (MB)" \
        "$(mb "$five") ($(awk -v a="$five" -v b="$one" 'BEGIN { printf "%.2f", a / b }')x one)" \
        "$cli_five (wasmtime run)"

    local port=18080 peer_port=18081 round ours_all=() theirs_all=()
    # The guest's per-request lines go to a log file, as a kubelet's would
    # (a detached ctr leaves the stdout fifo without a reader); the CLI's
    # go to a file too, so both pay for their logging.
    "${ctr[@]}" run -d --net-host --runtime "$ours" --log-uri "file://$work/http-bench.log" \
        --env "WASI_HTTP_LISTEN_ADDR=127.0.0.1:$port" "$ref/python-http:latest" http-bench >/dev/null
    wait_http $port
    req_per_s $port >/dev/null # warm-up
    if [ -x "$wasmtime_cli" ]; then
        "$wasmtime_cli" serve -S cli --addr "127.0.0.1:$peer_port" "$py_http" \
            >"$work/serve-bench.log" 2>&1 &
        pid=$!
        wait_http $peer_port
        req_per_s $peer_port >/dev/null
    fi
    # Rounds alternate between the two servers, so a noisy spell of the
    # machine does not fall on one side only; each side's median is kept.
    for round in $(seq "${BENCH_HTTP_ROUNDS:-3}"); do
        ours_all+=("$(req_per_s $port)")
        [ -n "$pid" ] && theirs_all+=("$(req_per_s $peer_port)")
    done
    ours_rps=$(printf '%s\n' "${ours_all[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    stop_all http-bench
    if [ -n "$pid" ]; then
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        theirs_rps=$(printf '%s\n' "${theirs_all[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        ratio=$(awk -v a="$ours_rps" -v b="$theirs_rps" 'BEGIN { printf "%.2f", a / b }')
    fi
    row "HTTP requests/s, Python wasi:http (ratio)" "$ours_rps ($ratio)" "$theirs_rps (wasmtime serve)"
}

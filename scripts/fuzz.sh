#!/bin/sh
# Runs every fuzz target of fuzz/ for FUZZ_SECONDS (45 by default) from
# its committed corpus, with the nightly toolchain and cargo-fuzz (put
# into cargo's bin directory from crates.io if missing). New inputs go to
# a scratch directory, so the committed corpus only changes by hand. A
# crash fails the run; libFuzzer saves the input under fuzz/artifacts/,
# and once the bug is fixed that input goes into fuzz/corpus/<target>/,
# where every later run replays it first.
set -eu
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-45}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo "+$toolchain" fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo "+$toolchain" fuzz list); do
    echo "== fuzz $target for ${secs}s"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    if ! cargo "+$toolchain" fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $target failed: the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" || true
done

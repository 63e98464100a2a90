#!/usr/bin/env bash
# Every check qxl-spice has, in the order CI runs them. Installs what it needs
# first (Debian packages, cargo-fuzz), so it works on a fresh Debian machine.
#
#   scripts/test-all.sh            # everything
#   FUZZ_SECONDS=60 scripts/test-all.sh   # longer fuzz smoke per target
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
step() {
    printf '\n==== %s\n' "$*"
    # Disk is what CI machines run out of first: say how much is left at
    # every step, so a "No space left on device" is never a mystery.
    df -h --output=avail,target . 2>/dev/null | tail -n 1 | awk '{print "     (disk free: " $1 " on " $2 ")"}'
}

# CI builds everything once, from scratch: incremental state and full debug
# info would only fill the disk (several GB over the debug, release and fuzz
# builds). Line tables keep file:line in every backtrace.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}"
export CARGO_PROFILE_BENCH_DEBUG="${CARGO_PROFILE_BENCH_DEBUG:-line-tables-only}"

step "install test dependencies"
if [ -x scripts/install-test-deps.sh ]; then
    scripts/install-test-deps.sh
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "FATAL: a nightly toolchain is needed for the fuzz smoke run (cargo +nightly fuzz)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

step "cargo test"
cargo test --workspace --all-features

step "benches compile"
cargo bench --workspace --no-run --quiet

step "fuzz smoke (${FUZZ_SECONDS}s per target)"
targets=$(cargo +nightly fuzz list --fuzz-dir fuzz)
for t in $targets; do
    echo "-- fuzz target $t"
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    seeds=()
    extra=()
    case "$t" in
        ring_replay | replay_parse)
            # The replay corpus written by vmm-glue's replay_corpus test.
            [ -d target/qxl-replay-corpus ] && seeds=(target/qxl-replay-corpus)
            extra=(-max_len=65536)
            ;;
    esac
    log="target/fuzz-smoke-$t.log"
    mkdir -p target
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAIL: fuzz target $t failed (crash input under fuzz/artifacts/$t)" >&2
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
done

step "all checks passed"

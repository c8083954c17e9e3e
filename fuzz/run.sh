#!/usr/bin/env bash
# Run each cargo-fuzz target for a bounded time, one after the other, and print a summary.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
#
# Works on the stable toolchain: targets are built with `--sanitizer none` (all our code is safe
# Rust, `unsafe_code = "forbid"`; debug assertions and overflow checks stay on, cargo-fuzz's default).
# Set FUZZ_SANITIZER=address to use ASan where a nightly toolchain exists (or RUSTC_BOOTSTRAP=1).
#
# Seeds: the RFC 4475 torture messages (read from `shared/rfc4475` in an ancestor folder, never
# copied here), the shipped dialplans and fixtures, and fuzz/seeds/<target>. New inputs go to
# fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>, logs to fuzz/logs (all git-ignored).
# Exit status: 0 when no target found anything, 1 otherwise.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

secs="${1:-60}"
shift || true
all_targets=(parse proxy framer dialplan_load dialplan_route sdp_rtp)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
sanitizer="${FUZZ_SANITIZER:-none}"

# shared/rfc4475 next to the checkout (or further up).
rfc4475=""
dir="$root"
for _ in 1 2 3 4 5; do
    if [ -d "$dir/shared/rfc4475" ]; then
        rfc4475="$dir/shared/rfc4475"
        break
    fi
    dir="$(dirname "$dir")"
done
[ -n "$rfc4475" ] || echo "note: no shared/rfc4475 found above $root; fuzzing without the torture seeds" >&2

seeds_for() {
    local t="$1"
    [ -d "seeds/$t" ] && echo "seeds/$t"
    case "$t" in
        parse | framer | proxy) [ -n "$rfc4475" ] && echo "$rfc4475" ;;
        dialplan_load) echo "$root/dialplans" "$root/crates/dialplan/tests/fixtures" ;;
    esac
    return 0
}

max_len_for() {
    case "$1" in
        proxy) echo 16384 ;;
        dialplan_load) echo 32768 ;;
        *) echo 8192 ;;
    esac
}

cargo fuzz build --sanitizer "$sanitizer"

mkdir -p logs
status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    # shellcheck disable=SC2046
    if cargo fuzz run --sanitizer "$sanitizer" "$t" "corpus/$t" $(seeds_for "$t") -- \
        -max_total_time="$secs" -max_len="$(max_len_for "$t")" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
    fi
    after=$(find "artifacts/$t" -type f | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*' || true)
    units=$(find "corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-16s %-7s %10s execs %7s/s  cov %6s  corpus %5s  new artifacts %s' \
        "$t" "$result" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$units" "$((after - before))")")
    if [ "$result" != ok ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "logs/$t.log" | head -5 >&2 || true
    fi
done

echo
echo "fuzzed ${secs}s per target (sanitizer: $sanitizer)"
printf '%s\n' "${summary[@]}"
exit "$status"

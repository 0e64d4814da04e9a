#!/usr/bin/env bash
# Runs the cargo-fuzz targets, the least-fuzzed first, and appends one line per run to
# fuzz/hours.tsv (the ledger the "CPU-hours per target" figure is summed from), so the
# total survives the machine the runs were made on.
#
#   fuzz/hours.sh [SECONDS_PER_RUN] [TARGET...]      (default 600 s, every target)
#
# Build first:  cd fuzz && RUSTFLAGS=-Coverflow-checks cargo +nightly fuzz build -s none -O
# (or RUSTC_BOOTSTRAP=1 with the stable toolchain where there is no nightly).
# The growing corpus is kept outside the repo ($FUZZ_WORK, default /dev/shm/pecd-fuzz);
# only the seeds under fuzz/seeds are committed. Run two of these for two cores.
# Lines: date, commit, target, cpu_seconds, runs, exec_per_s, cov, ft, crashes.
set -u
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls "$here/fuzz_targets" | sed 's/\.rs$//')
fi
work=${FUZZ_WORK:-/dev/shm/pecd-fuzz}
bin=${FUZZ_BIN:-$here/target/x86_64-unknown-linux-gnu/release}
ledger=${FUZZ_LEDGER:-$here/hours.tsv}
commit=$(git -C "$here" rev-parse --short HEAD)
mkdir -p "$work"
# The target with the least CPU time in the ledger goes next (free ones only).
next_target() {
    for t in "${targets[@]}"; do
        printf '%s %s\n' "$(awk -F'\t' -v t="$t" '$3 == t {s += $4} END {print s + 0}' "$ledger")" "$t"
    done | sort -n | awk '{print $2}'
}
while :; do
    t=
    for c in $(next_target); do
        # One run per target at a time, whatever the number of loops.
        exec 9>"$work/$c.lock"
        if flock -n 9; then t=$c; break; fi
        exec 9>&-
    done
    [ -n "$t" ] || { sleep 5; continue; }
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    log="$work/$t.$(date +%s).log"
    # libFuzzer's limit is wall time; the ledger records CPU time (user + sys).
    /usr/bin/time -f 'cpu %U %S' -o "$log.time" \
        nice -n 19 "$bin/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -dict="$here/dict/$t.dict" \
        -artifact_prefix="$work/artifacts/$t/" \
        "$work/corpus/$t" "$here/seeds/$t" >"$log" 2>&1
    cpu=$(awk '/^cpu/ {printf "%d", $2 + $3}' "$log.time")
    runs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
    eps=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    crashes=$(ls "$work/artifacts/$t" | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$commit" "$t" \
        "${cpu:-0}" "${runs:-0}" "${eps:-0}" "${cov:-0}" "${ft:-0}" "$crashes" >>"$ledger"
    exec 9>&-
    [ -f "$work/stop" ] && exit 0
done

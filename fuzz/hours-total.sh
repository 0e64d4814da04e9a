#!/usr/bin/env bash
# Sums fuzz/hours.tsv per target: CPU seconds, runs, best coverage, crashes seen.
here=$(cd "$(dirname "$0")" && pwd)
awk -F'\t' '!/^#/ && NF >= 9 {
    cpu[$3] += $4; runs[$3] += $5; n[$3]++
    if ($7 > cov[$3]) cov[$3] = $7
    if ($8 > ft[$3]) ft[$3] = $8
    if ($9 > cr[$3]) cr[$3] = $9
    if (n[$3] == 1 || $6 > 0) eps[$3] = $6
} END {
    printf "%-14s %8s %6s %12s %8s %6s %7s %7s\n", "target", "cpu_s", "runs#", "execs", "exec/s", "cov", "ft", "crashes"
    for (t in cpu) printf "%-14s %8d %6d %12d %8d %6d %7d %7d\n", t, cpu[t], n[t], runs[t], eps[t], cov[t], ft[t], cr[t]
}' "$here/hours.tsv" | sort

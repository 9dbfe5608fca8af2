#!/usr/bin/env bash
# Duplicates after a crash: `herald send 1 --wait` of the sample digest to N
# synthetic subscribers into Postfix's smtp-sink (which counts messages) is
# killed with SIGKILL K times while sending, restarted each time, and the last
# run goes to the end. A message the relay accepted whose outcome was not yet
# written is sent again after the restart, so the sink ends with more than N:
# duplicates = sink count - N, reported per kill, for each flush window
# (HERALD_DELIVERY_FLUSH_INTERVAL). Each window also gets one uninterrupted run
# on a fresh copy, for the throughput cost (msg/s, CPU µs/msg).
#
# Usage: benches/crash.sh [options]
#   --n 40000                recipients
#   --kills 3                SIGKILLs per window
#   --windows "200ms 5ms"    values of delivery.flush_interval
#   --concurrency 8          HERALD_SMTP_CONCURRENCY
#   --herald PATH            this binary instead of target/release/herald (no build)
#   --no-build               use target/release/herald as it is
#   --keep                   keep the temporary directory
# The lease is set to 2 s (HERALD_DELIVERY_LEASE) so that a restart takes over
# the killed process's claims quickly. Needs smtp-sink (package postfix) and
# GNU time. See benches/README.md.
set -euo pipefail

n=40000
kills=3
windows="200ms 5ms"
concurrency=8
build=1
keep=0
herald_bin=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --n) n="$2"; shift 2 ;;
        --kills) kills="$2"; shift 2 ;;
        --windows) windows="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --herald) herald_bin="$2"; build=0; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
herald="${herald_bin:-$root/target/release/herald}"
[[ $herald == /* ]] || herald="$PWD/$herald"
sample="$root/emails/samples/week-2024-18.md"
smtp_sink=$(command -v smtp-sink || ls /usr/sbin/smtp-sink 2>/dev/null || true)
[[ -n $smtp_sink ]] || { echo "smtp-sink not found: apt-get install postfix" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "GNU time is needed at /usr/bin/time" >&2; exit 1; }
if [[ $build == 1 ]]; then
    echo "building herald (release)…" >&2
    (cd "$root" && cargo build --release --quiet)
fi

source "$root/benches/lib.sh"
cleanup() {
    [[ -n $sink_pid ]] && kill -TERM "$sink_pid" 2>/dev/null || true
    [[ -n ${send_pid:-} ]] && kill -KILL "$send_pid" 2>/dev/null || true
    if [[ $keep == 0 && -n ${work:-} ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
sent_of() { (cd "$1" && "$herald" status 1 --json | awk -F': ' '/^ *"sent": [0-9]/ { gsub(/[^0-9]/, "", $2); print $2; exit }'); }

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-crash.XXXXXX")
mkdir -p "$work/template"
(
    cd "$work/template"
    "$herald" init --path herald.toml >/dev/null
    "$herald" items import "$sample" --ready >/dev/null
    "$herald" issue compose >/dev/null
    awk -v n="$n" 'BEGIN { print "email,name"; for (i = 1; i <= n; i++) printf "reader%d@bench.example.com,Reader %d\n", i, i }' >subscribers.csv
    "$herald" subscribers import subscribers.csv --confirmed >/dev/null
    rm subscribers.csv
)
export HERALD_SMTP_CONCURRENCY=$concurrency HERALD_DELIVERY_LEASE=2s HERALD_LOG=warn
rows=()
fail=0
for w in $windows; do
    export HERALD_DELIVERY_FLUSH_INTERVAL=$w

    # Throughput, uninterrupted.
    run="$work/clean-$w"
    cp -r "$work/template" "$run"
    start_sink "$run/sink.out"
    (cd "$run" && HERALD_SMTP_URL="smtp://127.0.0.1:$port" /usr/bin/time -f '%e %U %S' "$herald" send 1 --wait >/dev/null 2>"$run/time") || true
    got=$(stop_sink)
    read -r wall user sys < <(tail -1 "$run/time")
    rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    cpu=$(awk -v n="$n" -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", (u + s) / n * 1e6 }')
    echo "window $w: uninterrupted $rate msg/s, $cpu µs CPU/msg, sink $got/$n" >&2

    # K kills while sending, then to the end.
    run="$work/kill-$w"
    cp -r "$work/template" "$run"
    start_sink "$run/sink.out"
    killed=0
    for k in $(seq "$kills"); do
        (cd "$run" && HERALD_SMTP_URL="smtp://127.0.0.1:$port" exec "$herald" send 1 --wait >>"$run/send.log" 2>&1) &
        send_pid=$!
        # Kill in the middle of sending: after start-up, at a random point
        # of the next second.
        sleep "$(awk -v s="$RANDOM" 'BEGIN { printf "%.2f", 1.0 + (s % 100) / 100 }')"
        if kill -KILL "$send_pid" 2>/dev/null; then
            killed=$((killed + 1))
        else
            echo "run $k ended before the kill (N too small?)" >&2
        fi
        wait "$send_pid" 2>/dev/null || true
        send_pid=
    done
    status=0
    (cd "$run" && HERALD_SMTP_URL="smtp://127.0.0.1:$port" "$herald" send 1 --wait >>"$run/send.log" 2>&1) || status=$?
    got=$(stop_sink)
    sent=$(sent_of "$run")
    dups=$((got - n))
    per_kill=$(awk -v d="$dups" -v k="$killed" 'BEGIN { printf "%.1f", k ? d / k : 0 }')
    check="sink $got, status sent ${sent:-?}, exit $status"
    if [[ $status != 0 || ${sent:-} != "$n" || $got -lt $n ]]; then
        check="MISMATCH ($check)"
        fail=1
    fi
    echo "window $w: $killed kills, $dups duplicates ($per_kill per kill); $check" >&2
    rows+=("$(printf '| %8s | %8s | %10s | %5d | %10d | %8s | %s |' "$w" "$rate" "$cpu" "$killed" "$dups" "$per_kill" "$check")")
done

echo
echo "N=$n, c=$concurrency, sink smtp-sink; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); herald $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "| flush_interval | msg/s | CPU µs/msg | kills | duplicates | per kill | check |"
echo "|---------:|---------:|-----------:|------:|-----------:|---------:|-------|"
printf '%s\n' "${rows[@]}"
exit $fail

#!/usr/bin/env bash
# Bounce benchmark (issue #11): DSNs into `herald serve`'s SMTP receiver
# (bounce.listen) as fast as it takes them, each recorded in SQLite with its
# effect (delivery bounced, subscription bounced, address suppressed) before
# the receiver answers 250.
#
# For each N: a database with N confirmed readers and issue #1 sent to all
# of them (`herald send 1 --wait` into a local SMTP sink, with
# bounce.domain set); then `herald serve` runs under GNU time, and
# benches/bounce_client.py sends one Postfix-format DSN per reader to its
# VERP address over --connections pipelined SMTP connections. Reported:
# reports/s (N / the client's wall time), CPU per report ((user+sys) of the
# whole serve process / N, start-up and idle included), peak RSS of the
# serve process (it should not grow with N), the receiver's replies, and
# what the database holds afterwards (bounce_reports rows, bounced
# subscriptions).
#
# Usage: benches/bounces.sh [options]
#   --sizes "10000 100000"   report counts
#   --connections 8          simultaneous SMTP connections of the client
#   --no-build               use target/release/herald as it is
#   --herald PATH            benchmark this binary instead (implies --no-build)
#   --keep                   keep the temporary directory (logs, databases)
#   -h, --help
# Needs bash, awk, python3, /usr/bin/time (GNU time) and an SMTP sink for the
# send (Postfix smtp-sink, else benches/sink.py). See benches/README.md.
set -euo pipefail

sizes="10000 100000"
connections=8
build=1
keep=0
herald_bin=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) sizes="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --herald) herald_bin="$2"; build=0; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
herald="${herald_bin:-$root/target/release/herald}"
[[ $herald == /* ]] || herald="$PWD/$herald"
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time is needed at $timebin (apt-get install time)" >&2; exit 1; }
smtp_sink=$(command -v smtp-sink || ls /usr/sbin/smtp-sink 2>/dev/null || true)
[[ -n $smtp_sink ]] && sink_kind=postfix || sink_kind=python

if [[ $build == 1 ]]; then
    echo "building herald (release)…" >&2
    (cd "$root" && cargo build --release --quiet --bin herald)
fi
[[ -x $herald ]] || { echo "$herald is missing; run without --no-build" >&2; exit 1; }

source "$root/benches/lib.sh"
serve_pid=
cleanup() {
    [[ -n $sink_pid ]] && kill -TERM "$sink_pid" 2>/dev/null || true
    [[ -n $serve_pid ]] && kill -TERM "$serve_pid" 2>/dev/null || true
    if [[ $keep == 0 && -n ${work:-} ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

work=$(mktemp -d "${TMPDIR:-/tmp}/herald-bounces.XXXXXX")
echo "logs and databases in $work$([[ $keep == 1 ]] || echo ' (removed at exit; --keep keeps them)')" >&2
export HERALD_SECURITY_SECRET="bounce-benchmark-secret-0123456789abcdef"
export HERALD_BOUNCE_DOMAIN="bounces.bench.test"
export HERALD_LOG="${HERALD_LOG:-warn}"
unset HERALD_CONFIG
results=()
fail=0

sql() { # $1: database, $2: one query → its first column, or "?" when it fails
    python3 - "$1" "$2" <<'PY' 2>/dev/null || echo "?"
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])
PY
}

for n in $sizes; do
    dir="$work/n$n"
    mkdir -p "$dir"
    (
        cd "$dir"
        "$herald" init --path herald.toml >/dev/null
        "$herald" items import "$root/benches/digest-8k.md" --ready >/dev/null
        "$herald" issue compose >/dev/null
        awk -v n="$n" 'BEGIN { print "email,name"; for (i = 1; i <= n; i++) printf "reader%d@bench.example.com,Reader %d\n", i, i }' >subscribers.csv
        "$herald" subscribers import subscribers.csv --confirmed >import.log
        rm subscribers.csv
    )
    start_sink "$dir/sink.out"
    (cd "$dir" && HERALD_SMTP_URL="smtp://127.0.0.1:$port" HERALD_SMTP_CONCURRENCY=8 "$herald" send 1 --wait >send.log 2>&1)
    got=$(stop_sink)
    echo "N=$n: issue 1 sent ($got messages at the sink)" >&2
    python3 - "$dir/herald.db" >"$dir/readers.tsv" <<'PY'
import sqlite3, sys
for sid, email in sqlite3.connect(sys.argv[1]).execute(
        "SELECT s.id, s.email FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id WHERE d.issue_id = 1 ORDER BY s.id"):
    print(f"{sid}\t{email}")
PY

    bport=$(free_port)
    hport=$(free_port)
    (cd "$dir" && HERALD_BOUNCE_LISTEN="127.0.0.1:$bport" HERALD_HTTP_BIND="127.0.0.1:$hport" \
        HERALD_HTTP_BASE_URL="http://127.0.0.1:$hport" HERALD_SMTP_URL="smtp://127.0.0.1:9" \
        exec $timebin -v "$herald" serve >serve.out 2>serve.time) &
    serve_pid=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$bport") 2>/dev/null && break
        sleep 0.05
    done
    line=$(python3 "$root/benches/bounce_client.py" --port "$bport" --domain "$HERALD_BOUNCE_DOMAIN" \
        --secret "$HERALD_SECURITY_SECRET" --readers "$dir/readers.tsv" --connections "$connections")
    echo "N=$n: $line" >&2
    # $serve_pid is GNU time's; SIGTERM goes to herald, its child, so that
    # time outlives it and reports.
    for child in $(pgrep -P "$serve_pid"); do kill -TERM "$child"; done
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
    read -r wall cpu rss < <(time_figures "$dir/serve.time")
    rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$line")
    replies=$(sed -n 's/.*replies=\(.*\)/\1/p' <<<"$line")
    reports=$(sql "$dir/herald.db" "SELECT count(*) FROM bounce_reports")
    bounced=$(sql "$dir/herald.db" "SELECT count(*) FROM subscriptions WHERE state = 'bounced'")
    check="replies $replies; rows $reports, bounced $bounced"
    [[ $replies == "250:$n" && $reports == "$n" && $bounced == "$n" ]] || { check="MISMATCH ($check)"; fail=1; }
    results+=("$(printf '| %9d | %5d | %9s | %11.1f | %6.1f | %s |' "$n" "$connections" "$rate" \
        "$(awk -v c="$cpu" -v n="$n" 'BEGIN { print c / n * 1e6 }')" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$check")")
    [[ $keep == 1 ]] || rm -f "$dir"/herald.db*
done

echo
echo "$(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); herald $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); SQLite; client benches/bounce_client.py"
echo
echo "|         N | conns | reports/s | CPU µs/report | RSS MB | check |"
echo "|----------:|------:|----------:|--------------:|-------:|-------|"
printf '%s\n' "${results[@]}"
exit $fail

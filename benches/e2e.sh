#!/usr/bin/env bash
# End-to-end delivery benchmark: `herald send 1 --wait` of the sample digest
# (~24 KB, or ~9.5 KB with --message-size 8k) to N synthetic confirmed subscribers, over SMTP on loopback into a
# sink that accepts and discards everything, with full tracking in SQLite.
#
# For each N it reports, per SMTP concurrency: messages/s (N / wall-clock time
# of `herald send --wait`, enqueueing included), CPU per message
# ((user+sys)/N), peak RSS, and checks that the sink counted N messages and
# `herald status 1 --json` shows N sent. In the same invocation it runs the
# reference, Postfix `smtp-source -s 16 -l SIZE -m N -d` (SIZE: a real message) into the same kind
# of sink, and gives Herald's rate as a ratio of it (the machine is shared,
# absolute figures are noisy; the ratio much less so).
#
# Usage: benches/e2e.sh [options]
#   --sizes "10000 100000"   recipient counts (1000000 works too)
#   --concurrency "4 8 16"   values of HERALD_SMTP_CONCURRENCY to try
#   --message-size 20k|8k    20k: the sample digest (emails/samples/week-2024-18.md,
#                            about 24 KB per message); 8k: benches/digest-8k.md,
#                            one short item, the smallest the template makes
#                            (about 9.5 KB). The size of a real message is
#                            measured (one send to the file outbox) and
#                            smtp-source sends messages of that size.
#   --sink auto|postfix|python
#                            auto: Postfix smtp-sink if installed, else
#                            benches/sink.py (pure Python, slower)
#   --install                apt-get install postfix when smtp-sink is missing
#   --no-build               use target/release/herald as it is
#   --herald PATH            benchmark this binary instead (implies --no-build),
#                            e.g. a copy saved before a change
#   --keep                   keep the temporary directories (logs, databases)
#   -h, --help
# Environment: any HERALD_* setting (e.g. HERALD_DELIVERY_BATCH_SIZE) is passed
# through to herald. Needs bash, awk, /usr/bin/time (GNU time); the reference
# run needs smtp-source (package postfix) and is skipped without it.
# See benches/README.md.
set -euo pipefail

sizes="10000 100000"
concurrencies="4 8 16"
message_size=20k
sink_kind=auto
install=0
build=1
keep=0
herald_bin=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) sizes="$2"; shift 2 ;;
        --concurrency) concurrencies="$2"; shift 2 ;;
        --message-size) message_size="$2"; shift 2 ;;
        --sink) sink_kind="$2"; shift 2 ;;
        --install) install=1; shift ;;
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
case "$message_size" in
    20k) sample="$root/emails/samples/week-2024-18.md" ;;
    8k) sample="$root/benches/digest-8k.md" ;;
    *) echo "--message-size: expected 20k or 8k" >&2; exit 2 ;;
esac
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time is needed at $timebin (apt-get install time)" >&2; exit 1; }

smtp_sink=$(command -v smtp-sink || ls /usr/sbin/smtp-sink 2>/dev/null || true)
smtp_source=$(command -v smtp-source || ls /usr/sbin/smtp-source 2>/dev/null || true)
if [[ -z $smtp_sink && $install == 1 && $sink_kind != python ]]; then
    if apt-cache policy postfix 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "installing postfix (for smtp-sink and smtp-source)…" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postfix >&2 || echo "postfix could not be installed; using benches/sink.py" >&2
    else
        echo "no postfix package available; using benches/sink.py" >&2
    fi
    smtp_sink=$(command -v smtp-sink || ls /usr/sbin/smtp-sink 2>/dev/null || true)
    smtp_source=$(command -v smtp-source || ls /usr/sbin/smtp-source 2>/dev/null || true)
fi
case "$sink_kind" in
    auto) [[ -n $smtp_sink ]] && sink_kind=postfix || sink_kind=python ;;
    postfix) [[ -n $smtp_sink ]] || { echo "smtp-sink not found (pass --install, or --sink python)" >&2; exit 1; } ;;
    python) ;;
    *) echo "--sink: expected auto, postfix or python" >&2; exit 2 ;;
esac

if [[ $build == 1 ]]; then
    echo "building herald (release)…" >&2
    (cd "$root" && cargo build --release --quiet)
fi
[[ -x $herald ]] || { echo "$herald is missing; run without --no-build" >&2; exit 1; }

source "$root/benches/lib.sh"
cleanup() {
    [[ -n $sink_pid ]] && kill -TERM "$sink_pid" 2>/dev/null || true
    if [[ $keep == 0 && -n ${work:-} ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT


work=$(mktemp -d "${TMPDIR:-/tmp}/herald-e2e.XXXXXX")
echo "sink: $sink_kind · logs and databases in $work$([[ $keep == 1 ]] || echo ' (removed at exit; --keep keeps them)')" >&2

# The size of one real message of this issue (to a reader like the benchmark's),
# sent to the file outbox, so the reference sends messages as large.
(
    mkdir -p "$work/size" && cd "$work/size"
    "$herald" init --path herald.toml >/dev/null
    "$herald" items import "$sample" --ready >/dev/null
    "$herald" issue compose >/dev/null
    printf 'email,name\nreader1@bench.example.com,Reader 1\n' >s.csv
    "$herald" subscribers import s.csv --confirmed >/dev/null
    "$herald" send 1 --wait >/dev/null 2>&1
)
msg_bytes=$(find "$work/size/outbox" -name '*.eml' -exec cat {} + | wc -c)
rm -rf "$work/size"
[[ $msg_bytes -gt 0 ]] || { echo "could not measure the message size" >&2; exit 1; }
echo "message size: $msg_bytes bytes ($message_size fixture $(basename "$sample"))" >&2
results=()
fail=0

for n in $sizes; do
    dir="$work/n$n"
    mkdir -p "$dir/template"
    (
        cd "$dir/template"
        "$herald" init --path herald.toml >/dev/null
        "$herald" items import "$sample" --ready >/dev/null
        "$herald" issue compose >/dev/null
        awk -v n="$n" 'BEGIN { print "email,name"; for (i = 1; i <= n; i++) printf "reader%d@bench.example.com,Reader %d\n", i, i }' >subscribers.csv
        "$herald" subscribers import subscribers.csv --confirmed >import.log
        rm subscribers.csv
    )
    echo "N=$n: $(tail -1 "$dir/template/import.log")" >&2

    # The reference: Postfix's own sender into the same kind of sink.
    ref_rate=
    if [[ -n $smtp_source ]]; then
        start_sink "$dir/ref-sink.out"
        $timebin -v "$smtp_source" -s 16 -l "$msg_bytes" -m "$n" -d "127.0.0.1:$port" >"$dir/ref.out" 2>"$dir/ref.time" || true
        got=$(stop_sink)
        read -r wall cpu rss < <(time_figures "$dir/ref.time")
        ref_rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
        results+=("$(printf '| %9d | smtp-source -s 16 | %8s | %10.1f | %6.1f | %6s | reference: sink %s/%s |' "$n" "$ref_rate" \
            "$(awk -v c="$cpu" -v n="$n" 'BEGIN { print c / n * 1e6 }')" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "1.00×" "$got" "$n")")
        echo "N=$n reference smtp-source: $ref_rate msg/s, sink got $got" >&2
    fi

    for c in $concurrencies; do
        run="$dir/c$c"
        cp -r "$dir/template" "$run"
        start_sink "$run/sink.out"
        status=0
        (cd "$run" && HERALD_SMTP_URL="smtp://127.0.0.1:$port" HERALD_SMTP_CONCURRENCY="$c" \
            $timebin -v "$herald" send 1 --wait >send.out 2>send.time) || status=$?
        got=$(stop_sink)
        sent=$(cd "$run" && "$herald" status 1 --json | awk -F': ' '/^ *"sent": [0-9]/ { gsub(/[^0-9]/, "", $2); print $2; exit }')
        read -r wall cpu rss < <(time_figures "$run/send.time")
        rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
        ratio=$([[ -n $ref_rate ]] && awk -v a="$rate" -v b="$ref_rate" 'BEGIN { printf "%.2f×", a / b }' || echo "-")
        ok="sink $got/$n, status sent ${sent:-?}"
        if [[ $status != 0 || $got != "$n" || ${sent:-} != "$n" ]]; then
            ok="MISMATCH ($ok, exit $status)"
            fail=1
        fi
        results+=("$(printf '| %9d | herald c=%-2d       | %8s | %10.1f | %6.1f | %6s | %s |' "$n" "$c" "$rate" \
            "$(awk -v c="$cpu" -v n="$n" 'BEGIN { print c / n * 1e6 }')" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$ratio" "$ok")")
        echo "N=$n herald c=$c: $rate msg/s ($ratio of smtp-source), $ok" >&2
        rm -f "$run"/herald.db*
    done
    rm -rf "$dir/template"
done

echo
echo "sink: $sink_kind; $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); herald $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); messages $msg_bytes bytes ($message_size), smtp-source -l $msg_bytes"
echo
echo "|         N | sender            |    msg/s | CPU µs/msg | RSS MB |  ratio | check |"
echo "|----------:|-------------------|---------:|-----------:|-------:|-------:|-------|"
printf '%s\n' "${results[@]}"
exit $fail

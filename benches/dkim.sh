#!/usr/bin/env bash
# DKIM benchmark: what signing costs a whole `herald send 1 --wait`, against
# what a signature costs on this machine, all in one invocation.
#
# 1. `openssl speed -seconds S -multi $(nproc) rsa2048`: RSA-2048 signatures
#    per second on all cores together (the reference: the cost of the
#    signature itself).
# 2. The sample digest (~20 KB) to N synthetic confirmed subscribers over SMTP
#    into a sink (Postfix smtp-sink, else benches/sink.py), as benches/e2e.sh
#    does it: `herald init`, items import, compose, subscribers import
#    --confirmed, then on fresh copies of that one database,
#    `/usr/bin/time -v herald send 1 --wait` with DKIM off, with DKIM on
#    (RSA-2048), and with --ed25519 also with RSA-2048 + Ed25519.
#
# Prints msg/s, CPU µs/msg and peak RSS per mode, and checks the goal of
# issue #9: DKIM-on ≥ 0.7 × min(DKIM-off, cores × openssl signs/s).
#
# Usage: benches/dkim.sh [options]
#   --n N                    recipients (default 10000)
#   --concurrency C          HERALD_SMTP_CONCURRENCY (default 8)
#   --seconds S              openssl speed duration (default 5)
#   --ed25519                also measure RSA + Ed25519 (two signatures)
#   --sink auto|postfix|python
#   --no-build               use target/release/herald as it is
#   --herald PATH            benchmark this binary instead (implies --no-build),
#                            e.g. a copy saved before a change
#   --keep                   keep the temporary directory (logs, databases)
#   -h, --help
# Needs bash, awk, openssl, /usr/bin/time (GNU time). See benches/README.md.
set -euo pipefail

n=10000
concurrency=8
seconds=5
ed25519=0
sink_kind=auto
build=1
keep=0
herald_bin=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --n) n="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --ed25519) ed25519=1; shift ;;
        --sink) sink_kind="$2"; shift 2 ;;
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
sample="$root/emails/samples/week-2024-18.md"
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time is needed at $timebin (apt-get install time)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is needed for the reference (apt-get install openssl)" >&2; exit 1; }

smtp_sink=$(command -v smtp-sink || ls /usr/sbin/smtp-sink 2>/dev/null || true)
case "$sink_kind" in
    auto) [[ -n $smtp_sink ]] && sink_kind=postfix || sink_kind=python ;;
    postfix) [[ -n $smtp_sink ]] || { echo "smtp-sink not found (apt-get install postfix, or --sink python)" >&2; exit 1; } ;;
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


work=$(mktemp -d "${TMPDIR:-/tmp}/herald-dkim.XXXXXX")
cores=$(nproc)
echo "sink: $sink_kind · $cores cores · work in $work$([[ $keep == 1 ]] || echo ' (removed at exit; --keep keeps it)')" >&2

# The reference: RSA-2048 signatures per second, all cores at once (with
# -multi, openssl's sign/s column is the sum over its processes).
openssl speed -seconds "$seconds" -multi "$cores" rsa2048 >"$work/openssl.out" 2>/dev/null
ossl=$(awk '/^rsa 2048 bits/ { v = $(NF - 1) } END { printf "%.0f", v }' "$work/openssl.out")
[[ -n $ossl && $ossl != 0 ]] || { echo "could not read openssl's sign/s from $work/openssl.out" >&2; exit 1; }
echo "openssl speed rsa2048 on $cores cores: $ossl signs/s" >&2

template="$work/template"
mkdir -p "$template"
(
    cd "$template"
    "$herald" init --path herald.toml >/dev/null
    "$herald" items import "$sample" --ready >/dev/null
    "$herald" issue compose >/dev/null
    "$herald" dkim generate --domain bench.example.com --selector bench --out dkim.pem >/dev/null
    if [[ $ed25519 == 1 ]]; then
        "$herald" dkim generate --algorithm ed25519 --domain bench.example.com --selector bench-ed --out dkim-ed.pem >/dev/null
    fi
    awk -v n="$n" 'BEGIN { print "email,name"; for (i = 1; i <= n; i++) printf "reader%d@bench.example.com,Reader %d\n", i, i }' >subscribers.csv
    "$herald" subscribers import subscribers.csv --confirmed >import.log
    rm subscribers.csv
)
echo "N=$n: $(tail -1 "$template/import.log")" >&2

modes="off rsa"
[[ $ed25519 == 1 ]] && modes="$modes rsa+ed25519"
declare -A rate
rows=()
fail=0
for mode in $modes; do
    run="$work/$mode"
    cp -r "$template" "$run"
    env=(HERALD_SMTP_CONCURRENCY="$concurrency")
    case "$mode" in
        rsa|rsa+ed25519) env+=(HERALD_DKIM_DOMAIN=bench.example.com HERALD_DKIM_SELECTOR=bench HERALD_DKIM_PRIVATE_KEY_FILE=dkim.pem) ;;
    esac
    [[ $mode == rsa+ed25519 ]] && env+=(HERALD_DKIM_ED25519_SELECTOR=bench-ed HERALD_DKIM_ED25519_PRIVATE_KEY_FILE=dkim-ed.pem)
    signed=-
    if [[ $mode != off ]]; then
        # Proof that this mode signs: a test copy into the file outbox.
        (cd "$run" && env "${env[@]}" HERALD_SMTP_URL= HERALD_SMTP_OUTBOX_DIR=proof "$herald" issue test 1 --to proof@bench.example.com >/dev/null)
        signed=$(cat "$run"/proof/*.eml | grep -c '^DKIM-Signature:' || true)
        rm -rf "$run/proof"
    fi
    start_sink "$run/sink.out"
    status=0
    (cd "$run" && env "${env[@]}" HERALD_SMTP_URL="smtp://127.0.0.1:$port" \
        $timebin -v "$herald" send 1 --wait >send.out 2>send.time) || status=$?
    got=$(stop_sink)
    sent=$(cd "$run" && "$herald" status 1 --json | awk -F': ' '/^ *"sent": [0-9]/ { gsub(/[^0-9]/, "", $2); print $2; exit }')
    read -r wall cpu rss < <(time_figures "$run/send.time")
    rate[$mode]=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
    ok="sink $got/$n, status sent ${sent:-?}, DKIM-Signature headers per message: $signed"
    if [[ $status != 0 || $got != "$n" || ${sent:-} != "$n" ]]; then
        ok="MISMATCH ($ok, exit $status)"
        fail=1
    fi
    rows+=("$(printf '| %-11s | %8s | %10.1f | %6.1f | %s |' "$mode" "${rate[$mode]}" \
        "$(awk -v c="$cpu" -v n="$n" 'BEGIN { print c / n * 1e6 }')" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$ok")")
    echo "DKIM $mode: ${rate[$mode]} msg/s ($ok)" >&2
    rm -f "$run"/herald.db*
done

goal=$(awk -v off="${rate[off]}" -v o="$ossl" 'BEGIN { m = off < o ? off : o; printf "%.0f", 0.7 * m }')
verdict=$(awk -v on="${rate[rsa]}" -v g="$goal" 'BEGIN { print (on >= g ? "PASS" : "FAIL") }')
[[ $verdict == PASS ]] || fail=1

echo
echo "N=$n, c=$concurrency, sink: $sink_kind; $cores cores; $(date -u +%Y-%m-%dT%H:%MZ); herald $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')${herald_bin:+ ($herald_bin)}"
echo
echo "| DKIM        |    msg/s | CPU µs/msg | RSS MB | check |"
echo "|-------------|---------:|-----------:|-------:|-------|"
printf '%s\n' "${rows[@]}"
echo
echo "| openssl rsa2048, $cores cores | goal = 0.7 × min(off, openssl) | DKIM-on (rsa) | on/off | result |"
echo "|---:|---:|---:|---:|---|"
printf '| %s signs/s | %s msg/s | %s msg/s | %s | %s |\n' "$ossl" "$goal" "${rate[rsa]}" \
    "$(awk -v a="${rate[rsa]}" -v b="${rate[off]}" 'BEGIN { printf "%.2f", a / b }')" "$verdict"
exit $fail

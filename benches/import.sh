#!/usr/bin/env bash
# Whole-process CSV import and enqueue benchmark, timed from outside exactly
# as a user runs the commands (start-up, migrations check, progress bar and
# report included).
#
# For each herald binary it runs, in a fresh `herald init` directory:
#   import --confirmed   `herald subscribers import FILE --confirmed`, N rows
#                        of `email,name,city` (one attribute column), all valid
#   re-import            the same command again: every row is an update
#   import (pending)     `herald subscribers import` of a smaller file
#                        (--pending-rows): each new address gets a
#                        confirmation mail (file outbox), so this measures
#                        the mail path, not the bulk write
#   send (enqueue)       `herald send 1` (no --wait) of a composed issue to
#                        the N confirmed subscribers: enqueue only
# and reports rows/s (N / wall-clock time), CPU µs per row ((user+sys)/N),
# peak RSS, and checks the counts (`herald subscribers export --state
# confirmed`, `herald status 1 --json`).
#
# In the same invocation it runs the references, through the `sqlite3` CLI
# with the same pragmas Herald uses (WAL, synchronous=NORMAL):
#   sqlite3 .import      `.import --csv --skip 1` of the same file into a
#                        table with the same unique indexes as `subscribers`
#                        (email, lower(email)) in one transaction
#   sqlite3 INSERT…SELECT the enqueue statement of Herald before this work
#                        (`INSERT INTO deliveries … SELECT … FROM
#                        subscriptions`), on a copy of the imported database
# and gives Herald's rate as a ratio to its reference (the machine is
# shared; compare ratios across runs, not absolute rates).
#
# Usage: benches/import.sh [options]
#   --rows N             rows to import and recipients to enqueue (default 1000000)
#   --pending-rows N     rows of the pending (confirmation mail) import;
#                        0 skips it (default 10000)
#   --herald PATH        benchmark this binary (repeatable: a saved "before"
#                        binary and the current one in the same invocation);
#                        implies --no-build unless . is given as well
#   --no-build           use target/release/herald as it is
#   --keep               keep the temporary directory (CSV, databases, logs)
#   --install            apt-get install sqlite3 when it is missing
#   -h, --help
# Needs bash, awk, /usr/bin/time (GNU time); the references need sqlite3.
# See benches/README.md.
set -euo pipefail

rows=1000000
pending_rows=10000
build=1
keep=0
install=0
binaries=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) rows="${2//_/}"; shift 2 ;;
        --pending-rows) pending_rows="${2//_/}"; shift 2 ;;
        --herald) binaries+=("$2"); build=0; shift 2 ;;
        --no-build) build=0; shift ;;
        --keep) keep=1; shift ;;
        --install) install=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $rows =~ ^[1-9][0-9]*$ ]] || { echo "--rows: expected a positive whole number, got '$rows'" >&2; exit 2; }
[[ $pending_rows =~ ^[0-9]+$ ]] || { echo "--pending-rows: expected a whole number, got '$pending_rows'" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
sample="$root/emails/samples/week-2024-18.md"
timebin=/usr/bin/time
[[ -x $timebin ]] || { echo "GNU time is needed at $timebin (apt-get install time)" >&2; exit 1; }
sqlite=$(command -v sqlite3 || true)
if [[ -z $sqlite && $install == 1 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y sqlite3 >&2 || true
    sqlite=$(command -v sqlite3 || true)
fi
[[ -n $sqlite ]] || echo "sqlite3 not found: the reference runs are skipped (pass --install)" >&2

if [[ ${#binaries[@]} == 0 ]]; then
    binaries=("$root/target/release/herald")
fi
if [[ $build == 1 ]]; then
    echo "building herald (release)…" >&2
    (cd "$root" && nice cargo build --release --quiet)
fi
for i in "${!binaries[@]}"; do
    b=${binaries[$i]}
    [[ $b == /* ]] || b="$PWD/$b"
    [[ -x $b ]] || { echo "$b is missing (build it, or run without --no-build)" >&2; exit 1; }
    binaries[$i]=$b
done

source "$root/benches/lib.sh"
cleanup() { if [[ $keep == 0 && -n ${work:-} ]]; then rm -rf "$work"; fi; }
trap cleanup EXIT
work=$(mktemp -d "${TMPDIR:-/tmp}/herald-import.XXXXXX")
echo "rows: $rows · files and databases in $work$([[ $keep == 1 ]] || echo ' (removed at exit; --keep keeps them)')" >&2


results=()
fail=0
ref_import=
ref_enqueue=
# row LABEL TOOL N TIMEFILE REFERENCE_RATE CHECK: appends a table row; sets rate.
row() {
    local label=$1 tool=$2 n=$3 timefile=$4 ref=$5 check=$6 wall cpu rss ratio
    read -r wall cpu rss < <(time_figures "$timefile")
    rate=$(awk -v n="$n" -v w="$wall" 'BEGIN { printf "%.0f", n / (w > 0 ? w : 0.001) }')
    ratio=$([[ -n $ref ]] && awk -v a="$rate" -v b="$ref" 'BEGIN { printf "%.2f×", a / b }' || echo "-")
    results+=("$(printf '| %-18s | %-24s | %9d | %7.2f | %8s | %7.2f | %6.1f | %6s | %s |' "$label" "$tool" "$n" "$wall" "$rate" \
        "$(awk -v c="$cpu" -v n="$n" 'BEGIN { print c / n * 1e6 }')" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$ratio" "$check")")
    echo "$label ($tool): $rate rows/s, $ratio, $check" >&2
}

csv="$work/subscribers.csv"
awk -v n="$rows" 'BEGIN { print "email,name,city"; for (i = 1; i <= n; i++) printf "reader%d@example%d.com,Reader %d,City %d\n", i, i % 10, i, i % 100 }' >"$csv"
pending_csv="$work/pending.csv"
awk -v n="$pending_rows" 'BEGIN { print "email,name,city"; for (i = 1; i <= n; i++) printf "pending%d@example%d.com,Pending %d,City %d\n", i, i % 10, i, i % 100 }' >"$pending_csv"
echo "generated $rows rows ($(du -h "$csv" | cut -f1))" >&2

# Reference 1: the sqlite3 shell's own CSV import into an indexed table.
if [[ -n $sqlite ]]; then
    ref="$work/ref"
    mkdir -p "$ref"
    "$sqlite" "$ref/ref.db" >/dev/null <<'SQL'
PRAGMA journal_mode = WAL;
CREATE TABLE subscribers (email TEXT NOT NULL UNIQUE, name TEXT, city TEXT);
CREATE UNIQUE INDEX subscribers_canonical_email ON subscribers (lower(email));
SQL
    $timebin -v "$sqlite" -cmd 'PRAGMA synchronous = NORMAL' "$ref/ref.db" ".import --csv --skip 1 $csv subscribers" \
        >"$ref/import.out" 2>"$ref/import.time" || true
    got=$("$sqlite" "$ref/ref.db" 'SELECT COUNT(*) FROM subscribers')
    check="reference: $got/$rows rows"
    [[ $got == "$rows" ]] || { check="MISMATCH ($check)"; fail=1; }
    row "import" "sqlite3 .import" "$rows" "$ref/import.time" "" "$check"
    ref_import=$rate
fi

for herald in "${binaries[@]}"; do
    name=$(basename "$herald")
    dir="$work/$name"
    mkdir -p "$dir"
    (cd "$dir" && "$herald" init --path herald.toml >/dev/null)

    status=0
    (cd "$dir" && $timebin -v "$herald" subscribers import "$csv" --confirmed >import.out 2>import.time) || status=$?
    confirmed=$(cd "$dir" && "$herald" subscribers export --state confirmed - | awk 'END { print NR - 1 }')
    check="exported $confirmed confirmed; $(tail -1 "$dir/import.out")"
    [[ $status == 0 && $confirmed == "$rows" ]] || { check="MISMATCH ($check, exit $status)"; fail=1; }
    row "import --confirmed" "$name" "$rows" "$dir/import.time" "$ref_import" "$check"

    status=0
    (cd "$dir" && $timebin -v "$herald" subscribers import "$csv" --confirmed >reimport.out 2>reimport.time) || status=$?
    check=$(tail -1 "$dir/reimport.out")
    [[ $status == 0 && $check == "imported 0 / updated $rows "* ]] || { check="MISMATCH ($check, exit $status)"; fail=1; }
    row "re-import" "$name" "$rows" "$dir/reimport.time" "$ref_import" "$check"

    # The enqueue reference runs on a copy of this database before herald enqueues.
    (cd "$dir" && "$herald" items import "$sample" --ready >/dev/null && "$herald" issue compose >/dev/null)
    if [[ -n $sqlite && -z $ref_enqueue ]]; then
        "$sqlite" "$dir/herald.db" "VACUUM INTO '$work/ref/enqueue.db'"
        $timebin -v "$sqlite" -cmd 'PRAGMA synchronous = NORMAL' "$work/ref/enqueue.db" \
            "INSERT INTO deliveries (issue_id, subscriber_id, state, attempts, next_attempt_at, updated_at)
             SELECT 1, sub.subscriber_id, 'queued', 0, 0, 0 FROM subscriptions sub
             WHERE sub.newsletter_id = 1 AND sub.state = 'confirmed'
             ON CONFLICT (issue_id, subscriber_id) DO NOTHING" >"$work/ref/enqueue.out" 2>"$work/ref/enqueue.time" || true
        got=$("$sqlite" "$work/ref/enqueue.db" 'SELECT COUNT(*) FROM deliveries')
        check="reference: $got/$rows deliveries"
        [[ $got == "$rows" ]] || { check="MISMATCH ($check)"; fail=1; }
        row "enqueue" "sqlite3 INSERT...SELECT" "$rows" "$work/ref/enqueue.time" "" "$check"
        ref_enqueue=$rate
        rm -f "$work/ref/enqueue.db"*
    fi
    status=0
    (cd "$dir" && $timebin -v "$herald" send 1 >send.out 2>send.time) || status=$?
    queued=$(cd "$dir" && "$herald" status 1 --json | awk -F': ' '/^ *"queued": [0-9]/ { gsub(/[^0-9]/, "", $2); print $2; exit }')
    check="status queued ${queued:-?}"
    if grep -q 'WARN' "$dir/send.time"; then check="$check; WARN on stderr"; fi
    [[ $status == 0 && ${queued:-} == "$rows" ]] || { check="MISMATCH ($check, exit $status)"; fail=1; }
    row "send (enqueue)" "$name" "$rows" "$dir/send.time" "$ref_enqueue" "$check"
    rm -f "$dir"/herald.db*

    if [[ $pending_rows -gt 0 ]]; then
        pdir="$dir/pending"
        mkdir -p "$pdir"
        (cd "$pdir" && "$herald" init --path herald.toml >/dev/null)
        status=0
        (cd "$pdir" && $timebin -v "$herald" subscribers import "$pending_csv" >import.out 2>import.time) || status=$?
        mails=$(find "$pdir/outbox" -type f 2>/dev/null | wc -l)
        check="$mails mails in the outbox; $(tail -1 "$pdir/import.out")"
        [[ $status == 0 && $mails == "$pending_rows" ]] || { check="MISMATCH ($check, exit $status)"; fail=1; }
        row "import (pending)" "$name" "$pending_rows" "$pdir/import.time" "" "$check"
        rm -rf "$pdir"
    fi
done

echo
echo "$(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); herald $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); $("$sqlite" --version 2>/dev/null | cut -d' ' -f1 | sed 's/^/sqlite3 /')"
echo
echo "| what               | tool                     |      rows |  wall s |   rows/s | CPU µs/row | RSS MB |  ratio | check |"
echo "|--------------------|--------------------------|----------:|--------:|---------:|--------:|-------:|-------:|-------|"
printf '%s\n' "${results[@]}"
exit $fail

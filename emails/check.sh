#!/usr/bin/env bash
# What the email's HTML and CSS ask of the major inboxes, from caniemail.com's
# data (`doiuse-email`, npm): renders the sample issue exactly as a subscriber
# gets it (`herald issue preview --html`, in a throwaway database) and writes
# the findings for Gmail, Outlook for Windows, Apple Mail and Yahoo to
# emails/doiuse-report.txt. emails/README.md ("Checks") explains each finding
# that touches layout or legibility.
#
#   bash emails/check.sh            # needs cargo, node and npm
#   HERALD_BIN=target/release/herald bash emails/check.sh
#
# doiuse-email is installed into a temporary folder (pinned version; nothing
# is added to the repository or installed globally).
set -euo pipefail

cd "$(dirname "$0")/.."
DOIUSE_VERSION=0.4.1
CLIENTS="gmail.*,outlook.windows,apple-mail.*,yahoo.*"
SAMPLE=emails/samples/week-2024-18.md
REPORT=emails/doiuse-report.txt

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y nodejs npm" >&2; exit 1; }
done

work=$(mktemp -d /tmp/herald-email-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ -z "${HERALD_BIN:-}" ]; then
    cargo build --quiet --bin herald
    HERALD_BIN=target/debug/herald
fi
herald=$(realpath "$HERALD_BIN")

echo "--- rendering $SAMPLE as a subscriber gets it"
export HERALD_DATABASE_URL="sqlite://$work/herald.db"
export HERALD_HTTP_BASE_URL="https://news.example.com"
"$herald" items import --ready "$SAMPLE" >/dev/null
"$herald" issue compose >/dev/null
"$herald" issue preview 1 --html "$work/sample.html" >/dev/null

echo "--- doiuse-email $DOIUSE_VERSION ($CLIENTS)"
npm install --silent --no-audit --no-fund --prefix "$work/npm" "doiuse-email@$DOIUSE_VERSION" >/dev/null
# The package's bin has no shebang line; run it with node.
node "$work/npm/node_modules/doiuse-email/bin/cli.js" --email-clients "$CLIENTS" "$work/sample.html" >"$work/result.json"

python3 - "$work/result.json" "$DOIUSE_VERSION" "$CLIENTS" "$SAMPLE" >"$REPORT" <<'EOF'
import json, sys
from collections import OrderedDict

result = json.load(open(sys.argv[1]))
version, clients, sample = sys.argv[2:5]

def grouped(lines):
    # The checker repeats a finding once per element; count them instead.
    counts = OrderedDict()
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [f"{l}  (x{n})" if n > 1 else l for l, n in counts.items()]

print(f"doiuse-email {version} (caniemail.com data) on {sample}")
print(f"as a subscriber gets it (herald issue preview --html), clients: {clients}")
print("Regenerate: bash emails/check.sh. Explanations: emails/README.md, \"Checks\".")
print()
errors = grouped(result.get("errors", []))
print(f"Not supported ({len(errors)}):")
for line in errors:
    print(f"  - {line}")
print()
notes = grouped(result.get("notes", []))
print(f"Notes ({len(notes)}):")
for line in notes:
    print(f"  - {line}")
EOF
echo "--- wrote $REPORT"

#!/usr/bin/env bash
# Renders a sweep's report.html in headless Chromium and saves a PNG to look at.
#
#   scripts/screenshot-report.sh out/quick/report.html [out/quick/report.png]
#
# Installs Debian's chromium when it is missing (needs root and the Debian registry). The page
# is self-contained, so Chromium runs with networking features off.
set -euo pipefail
html=${1:?usage: scripts/screenshot-report.sh REPORT.html [OUT.png]}
png=${2:-${html%.html}.png}
if ! command -v chromium >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1300,2400 \
    --screenshot="$png" "file://$(realpath "$html")" 2>/dev/null
echo "screenshot: $png"

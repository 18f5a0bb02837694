#!/bin/sh
# Look at a reproduction report as a reader would: headless Chromium renders report.html and
# saves a screenshot of its first screen (and, with a second argument, a full-page one).
#   scripts/screenshot-report.sh results/reproduce/report.html [out.png]
# Installs Debian's chromium when it is missing (needs root and the package registry).
set -eu
report=${1:?usage: scripts/screenshot-report.sh REPORT.html [OUT.png]}
out=${2:-${report%.html}-first-screen.png}
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,900 --screenshot="$out" "file://$(realpath "$report")" 2>/dev/null
echo "wrote $out"

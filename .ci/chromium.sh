#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard browser test (tests/test_dashboard_browser.py),
# which drives /usr/bin/chromium through Playwright's Python package; Playwright's own browser
# download (`playwright install`) is never used. Idempotent: a no-op when Chromium is present.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium.sh: /usr/bin/chromium is missing and apt-get is unavailable;" \
    "install Chromium by hand (the browser test is skipped without it)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
dpkg-query -W -f='chromium.sh: installed chromium ${Version}\n' chromium

#!/usr/bin/env bash
# Installs what the browser tests in web-demo/ need: Debian's Chromium and the npm
# packages of web-demo (playwright-core drives the system Chromium; it never downloads
# a browser of its own). Idempotent: safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
web_demo="$here/../web-demo"

if [ -x /usr/bin/chromium ]; then
    echo "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
else
    echo "chromium: installing from Debian's packages"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y chromium
fi

cd "$web_demo"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
echo "browser deps ready"

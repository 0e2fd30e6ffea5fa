#!/usr/bin/env bash
# Installs the headless browser the dashboard tests and `--screenshot` drive.
#
# Why Debian's chromium and not `playwright install`: test machines have no
# network beyond package registries, so Playwright's own browser download is
# impossible; Playwright drives the system browser via executable_path instead
# (see experiments/dashboard/browser.py).
#
# Idempotent: does nothing when /usr/bin/chromium already exists, so the
# Makefile can call it on every `make test`.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: $CHROMIUM is missing and apt-get is not available;" >&2
    echo "install a Chromium build and make it available at $CHROMIUM." >&2
    exit 1
fi

# Root in CI containers; sudo on a developer machine.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium

"$CHROMIUM" --version

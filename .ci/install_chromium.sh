#!/usr/bin/env bash
# Debian's Chromium for tests/test_browser_mlflow.py (Playwright drives it; no browser is downloaded).
# Idempotent: installs only when /usr/bin/chromium is missing.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
/usr/bin/chromium --version

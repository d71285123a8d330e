#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver (the web console's browser tests drive /usr/bin/chromium through
# /usr/bin/chromedriver with Selenium) when they are missing and we run as root. Never fails: without them (no
# root, no apt, no network) tests/e2e/test_e2e_console.py skips and says why.
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium/chromium-driver are not installed (needs root and apt-get): the console's browser tests will skip" >&2
  exit 0
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || echo "could not install chromium chromium-driver with apt-get: the console's browser tests will skip" >&2
fi
exit 0

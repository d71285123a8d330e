#!/usr/bin/env bash
# Install Debian's SoftHSM2 (the PKCS#11 token the pkcs11 seal's tests run against) when it is missing and we
# run as root. Never fails: without it (no root, no apt, no network) the pkcs11 tests skip and say why.
if command -v softhsm2-util >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "softhsm2 is not installed (needs root and apt-get): the pkcs11 seal tests will skip" >&2
  exit 0
fi
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2 >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2 >/dev/null 2>&1 \
    || echo "could not install softhsm2 with apt-get: the pkcs11 seal tests will skip" >&2
fi
exit 0

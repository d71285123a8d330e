#!/usr/bin/env bash
# Part of `make lint`: the protos must stay compatible with the previous commit's protos (buf's FILE rules:
# no field, message, RPC or package removed or renumbered; additions are fine). Skipped, with a note, when
# there is nothing to compare with: no git checkout, a single commit, a shallow clone without the parent, or
# a previous commit without protos.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUF="${BUF:-.venv/bin/buf}"
if ! git rev-parse --verify --quiet 'HEAD~1^{commit}' >/dev/null 2>&1; then
  echo "buf breaking: skipped (no previous commit in this clone)"
  exit 0
fi
if ! git cat-file -e 'HEAD~1:protos/buf.yaml' 2>/dev/null; then
  echo "buf breaking: skipped (the previous commit has no protos/buf.yaml)"
  exit 0
fi
exec "$BUF" breaking protos --against '.git#ref=HEAD~1,subdir=protos'

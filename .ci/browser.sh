#!/usr/bin/env bash
# Installs what the browser tests (tests/it/browser.rs, docs/ui.md) need: Debian's Chromium
# and the node modules of tests/browser (playwright-core, pinned by its package-lock.json),
# installed OUTSIDE the clone in $WARD_NPM_CACHE (default $HOME/.cache/ward-npm) and reused
# while the lock file is unchanged. Prints the NODE_PATH to export. Source it or run it:
#   export WARD_NODE_MODULES="$(bash .ci/browser.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2
fi
command -v node >/dev/null || {
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2
}

cache="${WARD_NPM_CACHE:-$HOME/.cache/ward-npm}"
mkdir -p "$cache"
stamp="$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)"
if [ ! -f "$cache/node_modules/playwright-core/package.json" ] \
  || [ "$(cat "$cache/.lock-sha256" 2>/dev/null)" != "$stamp" ]; then
  cp tests/browser/package.json tests/browser/package-lock.json "$cache/"
  # --ignore-scripts: playwright-core's package has no install step we need (it would not
  # download a browser anyway: the tests use /usr/bin/chromium).
  (cd "$cache" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  echo "$stamp" >"$cache/.lock-sha256"
fi
echo "$cache/node_modules"

#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/tests/dashboard.rs driving
# tests/browser/dashboard.test.mjs) needs:
#   - Debian's chromium (/usr/bin/chromium), driven headless by playwright-core;
#   - node and npm, if missing (Debian's packages);
#   - the test's npm packages, pinned by tests/browser/package-lock.json
#     (`npm ci`; playwright-core only: it downloads no browser).
#
#   scripts/install-browser-test-deps.sh
#
# The tests never install anything themselves: without these they fail and
# name this script. Safe to run again: it installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
    echo "install-browser-test-deps: installing ${need[*]}"
    apt_install "${need[@]}"
else
    echo "install-browser-test-deps: chromium, node and npm already present"
fi

# playwright-core only; never let an install script fetch a browser build.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
# Reinstall only when the installed playwright-core is not the locked one.
want=$(node -p "require('./tests/browser/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    echo "install-browser-test-deps: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "install-browser-test-deps: tests/browser/node_modules is up to date"
fi

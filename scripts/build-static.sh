#!/usr/bin/env bash
# Builds the browser code from its ES modules with esbuild (pinned in package.json and
# package-lock.json), each into one minified IIFE:
#   static/widget/src/embed.js    → static/widget/embed.js          the loader on company pages
#   static/widget/src/main.js     → static/widget/widget.js         the chat panel
#   static/agents/src/main.js     → static/agents/console.js        the staff console's live side
#   static/playground/src/main.js → static/playground/playground.js the staff playground
# static/shared/src/ (reconnect backoff, typing throttle) is bundled into the widget and the
# console. The built files are kept in the tree as well, so a checkout serves before a build;
# edit the sources, never the built files. scripts/widget-size.py checks the built widget.
#
# `npm ci` runs only when node_modules is missing or package-lock.json changed since the last
# one. Called by `make install` and `make install-dev`, so `make run` and `make test` build
# first. Needs Node.js (20; 18 at least) and npm: when they are missing this calls
# scripts/system-deps.sh, which installs Debian's nodejs and npm as root (with the test
# packages it installs anyway before `make test` runs them), else says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

have_node() { command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; }

if ! have_node; then
    echo "build-static: Node.js/npm not found; trying scripts/system-deps.sh" >&2
    bash scripts/system-deps.sh || true
fi
if ! have_node; then
    echo "build-static: the widget, the console and the playground are built with Node.js:" \
         "install Node.js 20" \
         "(Debian's nodejs and npm packages: sudo apt-get install nodejs npm), then run make" \
         "again" >&2
    exit 1
fi
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)'; then
    echo "build-static: Node.js $(node --version) is too old: install Node.js 20" \
         "(Debian's nodejs package, or https://nodejs.org)" >&2
    exit 1
fi

# The lock file's hash, recorded by the last `npm ci`: a changed lock installs again.
stamp=node_modules/.package-lock.sha256
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/esbuild ] || [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
    echo "build-static: npm ci (esbuild, pinned in package-lock.json)"
    # esbuild's install script only checks its platform package, which npm installs anyway.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
    echo "$lock_hash" >"$stamp"
fi

build() {  # build ENTRY OUTFILE BANNER
    node_modules/.bin/esbuild "$1" --bundle --minify --format=iife --target=es2020 \
        --legal-comments=none --log-level=warning --banner:js="$3" --outfile="$2"
}
built_from() { echo "/* CS Desk: built by scripts/build-static.sh from $1; edit those. */"; }

build static/widget/src/embed.js static/widget/embed.js "/* CS Desk chat widget loader.
 * <script src=\"https://HOST/static/widget/embed.js\" data-site-key=\"KEY\" async></script>
 * Optional: data-lang=\"en|zh-CN\", data-open=\"true\", data-idle-minutes=\"10\",
 * data-customer-token=\"JWT\" (docs/verified-customers.md).
 * Built by scripts/build-static.sh from static/widget/src/embed.js; edit that. */"
build static/widget/src/main.js static/widget/widget.js "$(built_from static/widget/src/)"
build static/agents/src/main.js static/agents/console.js "$(built_from static/agents/src/)"
build static/playground/src/main.js static/playground/playground.js \
    "$(built_from static/playground/src/)"
echo "build-static: built static/widget/embed.js, static/widget/widget.js," \
     "static/agents/console.js, static/playground/playground.js"

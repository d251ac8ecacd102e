#!/usr/bin/env bash
# System packages the tests need, installed only when missing (idempotent, quiet when present).
# Debian's chromium: the browser Playwright drives in tests/e2e (browsers are never downloaded).
# PostgreSQL has its own script (scripts/test-postgres.sh).
# Works in CI (root, no stdin, CI=true) and on a fresh Debian machine.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: everything present (chromium)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${missing[*]}; install it as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]} and no apt-get here: install it with your" \
         "system's package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "system-deps: installing ${missing[*]} failed (output above)" >&2
    exit 1
fi
for cmd in "${missing[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "system-deps: installed ${cmd} but the command ${cmd} is still not on PATH" >&2
        exit 1
    fi
done
echo "system-deps: installed ${missing[*]}"

#!/usr/bin/env bash
# System packages the tests need, installed only when missing (idempotent, quiet when present).
# Debian's chromium: the browser Playwright drives in tests/e2e (browsers are never downloaded).
# Debian's nginx: the reverse proxy of the scale-out test (tests/e2e/test_scale_out.py), run
# from deploy/nginx.conf in front of two Daphne processes. The test starts its own nginx on a
# free port; the package's system service is never started here (see policy-rc.d below).
# Debian's prometheus: the server the dashboard test (tests/e2e/test_prometheus.py) starts on a
# free port with its own config and storage, to run every query of deploy/grafana/dashboards/.
# Installed without recommends (no node exporter); its system service is not started either.
# Debian's nodejs and npm: scripts/build-static.sh builds static/widget and static/agents with
# them (esbuild from npm); it calls this script when they are missing, before `make test` does.
# Debian's dovecot-imapd: the IMAP server the e-mail channel's tests (tests/connectors/email)
# start on a free port with their own configuration and mailbox; its system service is not
# started either.
# PostgreSQL has its own script (scripts/test-postgres.sh).
# Works in CI (root, no stdin, CI=true) and on a fresh Debian machine.
set -euo pipefail

NGINX=/usr/sbin/nginx  # not on a non-root user's PATH on Debian
DOVECOT=/usr/sbin/dovecot  # nor is this

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x "$NGINX" ] || missing+=(nginx)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # /usr/bin/prometheus
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v dovecot >/dev/null 2>&1 || [ -x "$DOVECOT" ] || missing+=(dovecot-imapd)

if [ ${#missing[@]} -eq 0 ]; then
    echo "system-deps: everything present (chromium, nginx, prometheus, nodejs, npm, dovecot)"
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
cleanup=(rm -f "$log")
# Debian's nginx and prometheus packages start system services (nginx on port 80, prometheus
# on 9090) after installing them, where an init system runs. The tests need only the binaries:
# while installing, a policy-rc.d that says "no" (exit 101) keeps every service from starting.
# One that is there already (containers have one) is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# system-deps.sh: no service starts while test packages install.\nexit 101\n' \
        >"$POLICY"
    chmod 755 "$POLICY"
    cleanup+=("$POLICY")
fi
trap '"${cleanup[@]}"' EXIT
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "system-deps: installing ${missing[*]} failed (output above)" >&2
    exit 1
fi
for pkg in "${missing[@]}"; do
    case "$pkg" in
        nginx) found=$(command -v nginx || { [ -x "$NGINX" ] && echo "$NGINX"; } || true) ;;
        nodejs) found=$(command -v node || true) ;;
        dovecot-imapd) found=$(command -v dovecot || { [ -x "$DOVECOT" ] && echo "$DOVECOT"; } || true) ;;
        *) found=$(command -v "$pkg" || true) ;;
    esac
    if [ -z "$found" ]; then
        echo "system-deps: installed ${pkg} but its command is still not found" >&2
        exit 1
    fi
done
echo "system-deps: installed ${missing[*]}"

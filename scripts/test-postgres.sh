#!/usr/bin/env bash
# The database-touching tests again, against a real PostgreSQL server (production's database).
#
# Starts a throwaway cluster in a temp dir, on 127.0.0.1 and a free private port, runs pytest
# with DATABASE_URL pointing at it, then stops and removes the cluster whatever happens.
# Installs Debian's `postgresql` first when it is missing and we are root (CI).
#   bash scripts/test-postgres.sh                      # the default test modules
#   bash scripts/test-postgres.sh tests/answers/test_services.py -k once   # any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

# The tests whose database work PostgreSQL runs differently from SQLite: every module that
# stores or reads through the services, selectors and admin (a pool of database threads here,
# row locks, PostgreSQL's own SQL and its refusals, such as NUL characters in text), and the
# end-to-end tests that put several processes or hostile input on one database: two Daphne
# processes behind nginx, the widget in a browser, the API under generated requests, hostile
# frames. Not again here, as the database sees nothing different: the real model's tests (its
# words reach the database as the synthetic source's do), the browser tests of the clients'
# rendering, the dashboard's queries, the remote engine, the IMAP server's outage, and the
# process faults (killed under the same database code as the rest).
TESTS=(tests/answers/test_services.py tests/answers/test_memory.py tests/answers/test_consumer.py
       tests/answers/test_answers.py tests/answers/test_postgres_specific.py
       tests/answers/test_configuration.py tests/actions tests/customers
       tests/worker/test_worker.py tests/widget/test_widget_server.py
       tests/console/test_handoff.py tests/console/test_admin_review.py tests/console/test_console.py
       tests/console/test_finetune.py tests/console/test_playground.py
       tests/console/test_reports.py tests/console/test_console_knowledge.py
       tests/api/test_api_chat.py tests/api/test_api_openai.py tests/api/test_api_keys.py
       tests/quality/test_grounding.py tests/knowledge/test_knowledge.py
       tests/webhooks tests/connectors/email tests/connectors/wecom
       --deselect "tests/connectors/email/test_mail_round_trip.py::test_the_reader_survives_the_imap_server_going_away"
       tests/e2e/test_scale_out.py tests/e2e/test_hostile_frames.py tests/e2e/test_api_gateway.py
       tests/e2e/test_widget.py -m "not real_model")

# PostgreSQL server binaries: Debian's newest /usr/lib/postgresql/<ver>/bin, else initdb on PATH.
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [[ -z $dir ]] && command -v initdb >/dev/null && dir=$(dirname "$(readlink -f "$(command -v initdb)")")
    [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] && echo "$dir"
}

BIN=$(pg_bindir) || true
if [[ -z $BIN ]]; then
    if [[ $(id -u) != 0 ]]; then
        echo "test-postgres: PostgreSQL server is not installed." >&2
        echo "  Install it (Debian/Ubuntu: sudo apt-get install postgresql) and run again." >&2
        exit 1
    fi
    echo "test-postgres: installing Debian's postgresql…"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    BIN=$(pg_bindir) || { echo "test-postgres: no initdb after installing postgresql" >&2; exit 1; }
fi

# initdb refuses to run as root: the cluster then belongs to the `postgres` user.
AS_PG=()
if [[ $(id -u) == 0 ]]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    AS_PG=(runuser -u postgres --)
fi
pg() { (cd / && "${AS_PG[@]}" "$BIN/$1" "${@:2}"); }   # cd /: postgres may not read our cwd

PORT=${PG_TEST_PORT:-$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DIR=$(mktemp -d /tmp/cs-desk-pg.XXXXXX)
[[ ${#AS_PG[@]} -gt 0 ]] && chown postgres: "$DIR"

cleanup() {
    pg pg_ctl -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# Socket connections (only the cluster owner can reach the private socket dir) are trusted;
# TCP needs the password. fsync off: nothing here has to survive a crash.
PASSWORD=$($PY -c 'import secrets; print(secrets.token_hex(16))')
pg initdb -D "$DIR/data" -U postgres --no-locale -E UTF8 --auth-local=trust \
    --auth-host=scram-sha-256 >"$DIR/initdb.log" || { cat "$DIR/initdb.log" >&2; exit 1; }
pg pg_ctl -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    >/dev/null || { cat "$DIR/server.log" >&2; exit 1; }
# CREATEDB: pytest-django creates (and drops) test_desk next to desk.
pg psql -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE desk LOGIN CREATEDB PASSWORD '$PASSWORD'" -c "CREATE DATABASE desk OWNER desk"

echo
echo "================ PostgreSQL pass: $("$BIN/postgres" --version), 127.0.0.1:$PORT ================"
[[ $# -gt 0 ]] && TESTS=("$@")
status=0
DATABASE_URL="postgres://desk:$PASSWORD@127.0.0.1:$PORT/desk" $PY -m pytest "${TESTS[@]}" || status=$?
echo "================ PostgreSQL pass: $([[ $status == 0 ]] && echo passed || echo "FAILED ($status)") ================"
exit "$status"

#!/usr/bin/env bash
# A throwaway local Apache Superset (6.1.0 unless SUPERSET_VERSION says 4.1.4, 5.0.0 or 6.0.0) for
# the quickstart and the end-to-end tests.
#
#   scripts/superset.sh start    install (first time), configure, initialise, start, wait for /health
#   scripts/superset.sh stop     stop the server started by `start`
#   scripts/superset.sh status   exit 0 if it answers /health
#   scripts/superset.sh mcp-call TOOL [ARGS_JSON]
#                                6.1.0: call one tool of Superset's MCP service over stdio as an
#                                AI agent would (the service acting as admin); prints its answer
#
# Everything lives in $ROLLCALL_SUPERSET_DIR (default .superset/): the config with a random
# SECRET_KEY, the SQLite database, the server log, and the password of the `rollcall` service
# account (Admin role) in `rollcall-password`. The Python venv is $ROLLCALL_VENV (default .venv/).
# Another release gets its own venv and directory, .venv-<release>/ and .superset-<release>/ (a
# database one release initialised is not for another), and the pins it needs to start
# (docs/superset.md, Releases 4.1 to 6.1).
# SUPERSET_DATABASE_URI, read when the config is first written, puts the metadata database
# elsewhere than SQLite (scripts/e2e-postgres.sh: PostgreSQL; its driver is installed here).
# Re-running reuses whatever exists. Set SUPERSET_JWT_EXPIRES_SECONDS before the first start for
# short-lived access tokens (the tests use it to prove token refresh).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RELEASE=${SUPERSET_VERSION:-6.1.0}
case "$RELEASE" in
  # flask-caching 2.5 breaks 6.1.0 at start-up, the CLI needs rich, and /login/ needs cachetools.
  6.1.0) PINS=("flask-caching==2.3.1" rich cachetools); SUFFIX= ;;
  # 6.0.0's CLI needs rich too (`ModuleNotFoundError: No module named 'rich'` at `db upgrade`).
  6.0.0) PINS=(rich cachetools); SUFFIX=-$RELEASE ;;
  4.1.4) PINS=(); SUFFIX=-$RELEASE ;;
  # With marshmallow 4, 5.0.0 fails to start (`KeyError: 'permission_id'`).
  5.0.0) PINS=("marshmallow<4"); SUFFIX=-$RELEASE ;;
  *) echo "SUPERSET_VERSION must be 4.1.4, 5.0.0, 6.0.0 or 6.1.0, not '$RELEASE'" >&2; exit 2 ;;
esac
VENV=${ROLLCALL_VENV:-$ROOT/.venv$SUFFIX}
DIR=${ROLLCALL_SUPERSET_DIR:-$ROOT/.superset$SUFFIX}
PORT=${SUPERSET_PORT:-8088}
URL="http://127.0.0.1:$PORT"
export SUPERSET_HOME="$DIR" SUPERSET_CONFIG_PATH="$DIR/superset_config.py" FLASK_APP=superset

say() { printf '[superset] %s\n' "$*" >&2; }

install() {
  if [ ! -x "$VENV/bin/superset" ]; then
    say "installing apache-superset $RELEASE into $VENV (two to three minutes, once; pip shows each package)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off \
      "apache-superset==$RELEASE" ${PINS[@]+"${PINS[@]}"} >&2
  fi
  # A PostgreSQL metadata database needs its driver, which Superset does not install itself.
  case "${SUPERSET_DATABASE_URI:-}" in
    postgresql*)
      "$VENV/bin/python" -c 'import psycopg2' 2> /dev/null ||
        "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off psycopg2-binary >&2 ;;
  esac
}

configure() {
  mkdir -p "$DIR"
  if [ -f "$DIR/superset_config.py" ]; then return; fi
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  {
    echo "SECRET_KEY = \"$secret\""
    echo "SQLALCHEMY_DATABASE_URI = \"${SUPERSET_DATABASE_URI:-sqlite:///$DIR/superset.db}\""
    echo "FAB_ADD_SECURITY_API = True"
    if [ -n "${SUPERSET_JWT_EXPIRES_SECONDS:-}" ]; then
      echo "import datetime"
      echo "JWT_ACCESS_TOKEN_EXPIRES = datetime.timedelta(seconds=$SUPERSET_JWT_EXPIRES_SECONDS)"
    fi
  } > "$DIR/superset_config.py"
}

initialise() {
  if [ -f "$DIR/.initialised" ]; then return; fi
  say "initialising the metadata database (about half a minute, once)"
  "$VENV/bin/superset" db upgrade >> "$DIR/setup.log" 2>&1
  "$VENV/bin/superset" fab create-admin --username admin --firstname Admin --lastname User \
    --email admin@example.com --password admin >> "$DIR/setup.log" 2>&1
  "$VENV/bin/superset" init >> "$DIR/setup.log" 2>&1
  python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$DIR/rollcall-password"
  chmod 600 "$DIR/rollcall-password"
  "$VENV/bin/superset" fab create-user --role Admin --username rollcall --firstname Roll \
    --lastname Call --email rollcall@example.com --password "$(cat "$DIR/rollcall-password")" \
    >> "$DIR/setup.log" 2>&1
  touch "$DIR/.initialised"
}

healthy() { curl -fsS -m 2 "$URL/health" > /dev/null 2>&1; }

# The MCP service (Superset 6.1) needs the `fastmcp` extra, installed the first time it is used.
# It acts as the user MCP_DEV_USERNAME names: set in a config of its own that reads the web
# server's, so the web server is configured as before.
mcp_call() {
  if [ "$RELEASE" != 6.1.0 ]; then
    echo "the MCP service is Superset 6.1's; SUPERSET_VERSION is $RELEASE" >&2; exit 2
  fi
  if [ ! -f "$DIR/.initialised" ]; then
    echo "no Superset in $DIR yet: run '$0 start' first" >&2; exit 1
  fi
  if ! "$VENV/bin/python" -c 'import fastmcp' 2> /dev/null; then
    say "installing the MCP service's extra, apache-superset[fastmcp]==$RELEASE, into $VENV (once)"
    "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off \
      "apache-superset[fastmcp]==$RELEASE" ${PINS[@]+"${PINS[@]}"} >&2
  fi
  {
    echo "exec(open($(printf '%s' "$DIR/superset_config.py" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))')).read())"
    echo 'MCP_DEV_USERNAME = "admin"'
  } > "$DIR/mcp_config.py"
  SUPERSET_CONFIG_PATH="$DIR/mcp_config.py" "$VENV/bin/python" "$ROOT/scripts/mcp_call.py" "$@"
}

start() {
  install
  configure
  initialise
  # Only this directory's own Superset counts as already running: another one on the port
  # (an earlier run's, a different release) would be tested in its place.
  if [ -f "$DIR/superset.pid" ] && kill -0 "$(cat "$DIR/superset.pid")" 2> /dev/null && healthy; then
    say "already running at $URL"; return
  fi
  if healthy; then
    say "port $PORT answers, but not with the Superset of $DIR: stop that one first (or set SUPERSET_PORT)"
    exit 1
  fi
  say "starting Superset at $URL (log: $DIR/superset.log)"
  # Its own session, so Ctrl-C in a terminal does not reach it and `stop` can end the group.
  setsid "$VENV/bin/superset" run -h 127.0.0.1 -p "$PORT" --with-threads \
    >> "$DIR/superset.log" 2>&1 < /dev/null &
  echo $! > "$DIR/superset.pid"
  for _ in $(seq 1 180); do
    if healthy; then say "ready"; return; fi
    if ! kill -0 "$(cat "$DIR/superset.pid")" 2> /dev/null; then
      say "Superset exited during start-up; the end of $DIR/superset.log:"
      tail -n 30 "$DIR/superset.log" >&2
      exit 1
    fi
    sleep 1
  done
  say "Superset did not answer /health within 180 s; see $DIR/superset.log"
  exit 1
}

stop() {
  if [ -f "$DIR/superset.pid" ]; then
    local pid
    pid=$(cat "$DIR/superset.pid")
    kill -- "-$pid" 2> /dev/null || kill "$pid" 2> /dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2> /dev/null || break; sleep 0.5; done
    kill -9 -- "-$pid" 2> /dev/null || true
    rm -f "$DIR/superset.pid"
    say "stopped"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) healthy ;;
  mcp-call) shift; mcp_call "$@" ;;
  *) echo "usage: $0 start|stop|status|mcp-call TOOL [ARGS_JSON]" >&2; exit 2 ;;
esac

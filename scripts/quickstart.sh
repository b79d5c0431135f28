#!/usr/bin/env bash
# README's first command: a real local Apache Superset 6.1.0, and rollcall polling it with
# events printed on stdout. First run on a 2-core machine: about eight minutes (Superset install
# ~2–3 min, database set-up ~1 min, rollcall's release build ~4 min, each showing progress);
# later runs reuse all of it and start in seconds. Ctrl-C stops rollcall and Superset.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROLLCALL_SUPERSET_DIR=${ROLLCALL_SUPERSET_DIR:-$PWD/.superset}
export SUPERSET_PORT=${SUPERSET_PORT:-8088}
url="http://127.0.0.1:$SUPERSET_PORT"

started=$SECONDS
scripts/superset.sh start
if [ ! -x target/release/rollcall ]; then
  echo "[rollcall] building rollcall (release; the first build takes about four minutes on 2 cores)" >&2
fi
# Cargo's own progress (one "Compiling" line per crate) shows the build is moving.
cargo build --release --locked >&2
echo "[rollcall] ready after $((SECONDS - started)) s" >&2

config="$ROLLCALL_SUPERSET_DIR/rollcall.toml"
if [ ! -f "$config" ]; then
  cat > "$config" <<TOML
# Written by scripts/quickstart.sh: rollcall against the local Superset, events on stdout.
[store]
path = "$ROLLCALL_SUPERSET_DIR/rollcall-data"

[[sources]]
kind = "superset"
name = "local"
url = "$url"
username = "rollcall"
password_file = "$ROLLCALL_SUPERSET_DIR/rollcall-password"
poll_interval = "5s"
full_reconcile_interval = "1m"

[[sinks]]
kind = "jsonl"
name = "stdout"
path = "-"
TOML
fi

cat >&2 <<HELP

[rollcall] polling $url every 5 s as the 'rollcall' service account; events appear below
           (stdout), the log on stderr: "polling started", then a "still polling" line each
           minute nothing changes.

  Show every event type (in another terminal; it waits for each poll, about a minute):
      target/release/rollcall --config $config demo

  Or create a user yourself:
      TOKEN=\$(curl -s -X POST $url/api/v1/security/login -H 'Content-Type: application/json' \\
        -d '{"username":"admin","password":"admin","provider":"db","refresh":true}' \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
      curl -s -X POST $url/api/v1/security/users/ -H "Authorization: Bearer \$TOKEN" \\
        -H 'Content-Type: application/json' -d '{"first_name":"Ada","last_name":"Lovelace",
        "username":"ada","email":"ada@example.com","active":true,"password":"Passw0rd!","roles":[4]}'

  Superset's UI: $url (admin / admin).  State: target/release/rollcall --config $config status
  Ctrl-C stops rollcall and Superset.

HELP

rollcall_pid=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$rollcall_pid" ]; then
    kill -INT "$rollcall_pid" 2> /dev/null || true
    wait "$rollcall_pid" 2> /dev/null || true
  fi
  scripts/superset.sh stop
}
trap cleanup INT TERM EXIT
target/release/rollcall --config "$config" run &
rollcall_pid=$!
wait "$rollcall_pid"

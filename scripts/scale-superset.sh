#!/usr/bin/env bash
# rollcall against a real Superset holding many users, to show that a cycle's memory and time
# do not grow with them beyond Superset's own answers, measured the way docs/superset-setup.md
# ("Large Supersets") reports it. Not part of the test command: it takes minutes.
#
#   scripts/scale-superset.sh [USERS]      default 100000
#
# Starts a throwaway Superset 6.1.0 (scripts/superset.sh: dev server with threads, SQLite) in
# .superset-scale/ on port 18090, adds USERS users with the Gamma role straight into its
# database (the API would take hours), then runs the release binary as a child process:
# a first full reconcile into an empty store, a sequential bare keyset read of the same pages
# (Python requests, one page after another: the baseline), an unchanged full reconcile, and
# two idle incremental cycles. For each: wall time, the process's peak RSS (`/usr/bin/time`'s
# maximum resident set size) and how much the store directory grew.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
USERS=${1:-100000}
export ROLLCALL_SUPERSET_DIR=${ROLLCALL_SUPERSET_DIR:-$ROOT/.superset-scale}
export SUPERSET_PORT=${SUPERSET_PORT:-18090}
DIR=$ROLLCALL_SUPERSET_DIR
URL="http://127.0.0.1:$SUPERSET_PORT"
VENV=${ROLLCALL_VENV:-$ROOT/.venv}

bash "$ROOT/scripts/superset.sh" start

"$VENV/bin/python" - "$DIR/superset.db" "$USERS" <<'EOF'
import sqlite3, sys, datetime
db = sqlite3.connect(sys.argv[1])
want = int(sys.argv[2])
have = db.execute("select count(*) from ab_user where username like 'scale%'").fetchone()[0]
gamma = db.execute("select id from ab_role where name = 'Gamma'").fetchone()[0]
# A day old, so an idle cycle's overlap window holds none of them.
day_ago = (datetime.datetime.now() - datetime.timedelta(days=1)).isoformat(sep=" ")
for i in range(have, want):
    cur = db.execute(
        "insert into ab_user (first_name, last_name, username, password, active, email,"
        " login_count, fail_login_count, created_on, changed_on) values (?,?,?,?,?,?,?,?,?,?)",
        ("Scale", f"User {i}", f"scale{i}", "x", 1, f"scale{i}@example.com", None, None,
         day_ago, day_ago))
    db.execute("insert into ab_user_role (user_id, role_id) values (?, ?)", (cur.lastrowid, gamma))
db.commit()
print(f"[scale] {want} scale users in the database ({want - have} added)", file=sys.stderr)
EOF

cargo build --release --locked --quiet --bin rollcall
STORE=$DIR/rollcall-data
rm -rf "$STORE"
CONFIG=$DIR/rollcall-scale.toml
cat > "$CONFIG" <<EOF
[store]
path = "$STORE"

[[sources]]
kind = "superset"
name = "scale"
url = "$URL"
username = "rollcall"
password_file = "$DIR/rollcall-password"

[[sinks]]
kind = "jsonl"
name = "file"
path = "$DIR/rollcall-events.jsonl"
EOF

size() { if [ -d "$STORE" ]; then du -sb "$STORE" | cut -f1; else echo 0; fi; }
row() { printf '| %s | %s | %s MiB | %s bytes |\n' "$1" "$2" "$3" "$4"; }
run() {
  local what=$1; shift
  local before after
  before=$(size)
  # Each answer's time is logged at debug level ("Superset answered … ms=…"); this run's lines
  # alone go to answers.log, for the time spent beyond them.
  RUST_LOG=info,rollcall::source::superset::client=debug \
    /usr/bin/time -f "%e %M" -o "$DIR/time.out" "$ROOT/target/release/rollcall" --config "$CONFIG" once "$@" \
    > /dev/null 2> "$DIR/answers.log"
  cat "$DIR/answers.log" >> "$DIR/rollcall-scale.log"
  after=$(size)
  read -r secs kib < "$DIR/time.out"
  local answered
  answered=$(grep -o 'ms=[0-9]*' "$DIR/answers.log" | awk -F= '{ t += $2 } END { print t + 0 }')
  row "$what" "$(awk -v s="$secs" 'BEGIN { printf "%.0f ms", s * 1000 }')" "$((kib / 1024))" "$((after - before))"
  if [ "${1:-}" != "--full" ]; then
    printf '| %s: beyond Superset'"'"'s answers (%s requests, %s ms) | %s | | |\n' "$what" \
      "$(grep -c 'Superset answered' "$DIR/answers.log")" "$answered" \
      "$(awk -v s="$secs" -v a="$answered" 'BEGIN { printf "%.0f ms", s * 1000 - a }')"
  fi
}

echo "| measure ($USERS users, Superset 6.1.0 dev server, SQLite) | time | peak RSS | store growth |"
echo "|---|---|---|---|"
run "first full reconcile (empty store)" --full
"$VENV/bin/python" - "$URL" "$(cat "$DIR/rollcall-password")" <<'EOF'
import sys, time, requests
url, password = sys.argv[1], sys.argv[2]
s = requests.Session()
token = s.post(f"{url}/api/v1/security/login",
               json={"username": "rollcall", "password": password, "provider": "db"}).json()["access_token"]
s.headers["Authorization"] = f"Bearer {token}"
started, after, rows = time.monotonic(), 0, 0
while True:
    q = f"(filters:!((col:id,opr:gt,value:{after})),order_column:id,order_direction:asc,page_size:100)"
    page = s.get(f"{url}/api/v1/security/users/", params={"q": q}).json()["result"]
    if not page:
        break
    rows += len(page)
    after = page[-1]["id"]
print(f"| bare sequential keyset read ({rows} users) | {(time.monotonic() - started) * 1000:.0f} ms | | |")
EOF
run "unchanged full reconcile" --full
run "idle incremental cycle"
run "next idle incremental cycle"
echo "[scale] Superset stays up for another run; stop it with: ROLLCALL_SUPERSET_DIR=$DIR SUPERSET_PORT=$SUPERSET_PORT scripts/superset.sh stop" >&2

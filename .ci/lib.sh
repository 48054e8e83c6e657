# Shared by the .ci service scripts (kafka.sh, s3.sh); sourced, not run.

# stop_pidfile PIDFILE [FILE...]: stops the process PIDFILE names (TERM, up to 5 s, then
# KILL) and removes PIDFILE and the FILEs. Nothing to do when PIDFILE is absent.
stop_pidfile() {
  local pidfile="$1"
  shift
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$@"
}

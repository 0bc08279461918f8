#!/usr/bin/env bash
# Stops the engines start.sh started: every process group recorded in a pid file of the run dir
# ${SLUICE_ENGINES_RUN_DIR:-${SLUICE_CACHE:-$HOME/.cache/sluice}/engines/run}, then removes the
# pid files and the env file (logs stay). Safe to run when nothing is running. --quiet: no output
# when there was nothing to stop.
set -euo pipefail

CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
RUN_DIR="${SLUICE_ENGINES_RUN_DIR:-$CACHE/engines/run}"
quiet=0
[[ "${1:-}" == "--quiet" ]] && quiet=1

[[ -d "$RUN_DIR" ]] || exit 0

# start.sh runs each engine as the leader of its own session, so its pgid equals its pid; a pid
# file whose process is gone, or whose pid now belongs to some other process, is just removed.
# A zombie (exited, not yet reaped) counts as stopped.
is_our_leader() {
  local pgid_stat
  pgid_stat="$(ps -o pgid=,stat= -p "$1" 2>/dev/null)" || return 1
  read -r pgid stat <<<"$pgid_stat"
  [[ "$pgid" == "$1" && "$stat" != Z* ]]
}

shopt -s nullglob
for pid_file in "$RUN_DIR"/*.pid; do
  name="$(basename "$pid_file" .pid)"
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && is_our_leader "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      is_our_leader "$pid" || break
      sleep 0.2
    done
    if is_our_leader "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      printf '[engines] %s (pid %s) did not stop on TERM within 10 s: killed\n' "$name" "$pid"
    else
      printf '[engines] stopped %s (pid %s)\n' "$name" "$pid"
    fi
  elif [[ "$quiet" -eq 0 ]]; then
    printf '[engines] %s was not running\n' "$name"
  fi
  rm -f "$pid_file"
done
rm -f "$RUN_DIR/engines.env"

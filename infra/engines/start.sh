#!/usr/bin/env bash
# Starts the local engines on free loopback ports and writes an env file for the tests:
#   ministack       DynamoDB + SQS + CloudWatch   -> SLUICE_MINISTACK_ENDPOINT
#   DynamoDB Local  AWS's own DynamoDB engine      -> SLUICE_DYNAMODB_LOCAL_ENDPOINT
# Both listen on 127.0.0.1 only. Run dir (env file, pid files, logs):
#   ${SLUICE_ENGINES_RUN_DIR:-${SLUICE_CACHE:-$HOME/.cache/sluice}/engines/run}
# Engines a previous start.sh left in that run dir are stopped first. Then:
#   source "$RUN_DIR/engines.env"      and later      bash infra/engines/stop.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
ENGINES="$CACHE/engines"
RUN_DIR="${SLUICE_ENGINES_RUN_DIR:-$ENGINES/run}"
READY_TIMEOUT_SECONDS="${SLUICE_ENGINE_READY_TIMEOUT:-30}"
DDB="$ENGINES/dynamodb-local"

log() { printf '[engines] %s\n' "$*"; }
die() {
  printf '[engines] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ -x "$ENGINES/venv/bin/ministack" && -f "$ENGINES/launcher/DynamoDbLocalLauncher.class" &&
  -f "$DDB/DynamoDBLocal.jar" ]] ||
  die "engines not installed in $ENGINES: run bash infra/engines/install.sh"
command -v java >/dev/null 2>&1 || die "java not found: run bash infra/engines/install.sh"

mkdir -p "$RUN_DIR"
SLUICE_ENGINES_RUN_DIR="$RUN_DIR" bash "$HERE/stop.sh" --quiet
rm -f "$RUN_DIR/engines.env"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Answers 0 once the engine at $1 serves a DynamoDB ListTables (both engines speak it).
answers_list_tables() {
  python3 - "$1" <<'PY'
import sys, urllib.request
req = urllib.request.Request(
    sys.argv[1] + "/",
    data=b"{}",
    method="POST",
    headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, "
        "SignedHeaders=host, Signature=0",
    },
)
try:
    with urllib.request.urlopen(req, timeout=2) as resp:
        sys.exit(0 if resp.status == 200 and b"TableNames" in resp.read() else 1)
except Exception:
    sys.exit(1)
PY
}

# start_engine NAME ENDPOINT_VAR COMMAND...: runs COMMAND, each @PORT@ replaced by a free port,
# in its own session; waits until it answers; records pid and endpoint. A port taken between
# picking and binding, or any other early exit, is retried twice with a fresh port.
start_engine() {
  local name="$1" var="$2"
  shift 2
  local attempt port pid deadline endpoint log_file="$RUN_DIR/$name.log"
  for attempt in 1 2 3; do
    port="$(free_port)"
    endpoint="http://127.0.0.1:$port"
    local argv=("${@//@PORT@/$port}")
    : >"$log_file"
    setsid "${argv[@]}" >>"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        break
      fi
      if answers_list_tables "$endpoint"; then
        log "$name ready on $endpoint (pid $pid, ${SECONDS}s since start.sh began)"
        printf 'export %s=%s\n' "$var" "$endpoint" >>"$RUN_DIR/engines.env.partial"
        return 0
      fi
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      printf '[engines] ERROR: %s did not answer on %s within %ss; last lines of %s:\n' \
        "$name" "$endpoint" "$READY_TIMEOUT_SECONDS" "$log_file" >&2
      tail -n 40 "$log_file" >&2
      return 1
    fi
    printf '[engines] %s exited during start (attempt %s); last lines of %s:\n' \
      "$name" "$attempt" "$log_file" >&2
    tail -n 40 "$log_file" >&2
  done
  printf '[engines] ERROR: %s failed to start 3 times\n' "$name" >&2
  return 1
}

rm -f "$RUN_DIR/engines.env.partial"
failed=0
# TMPDIR keeps ministack's own pid file and scratch files inside the run dir.
mkdir -p "$RUN_DIR/ministack-tmp"
start_engine ministack SLUICE_MINISTACK_ENDPOINT \
  env BIND_HOST=127.0.0.1 GATEWAY_PORT=@PORT@ TMPDIR="$RUN_DIR/ministack-tmp" LOG_LEVEL=WARNING \
  "$ENGINES/venv/bin/ministack" || failed=1
if [[ "$failed" -eq 0 ]]; then
  start_engine dynamodb-local SLUICE_DYNAMODB_LOCAL_ENDPOINT \
    java -Xmx1g -Djava.net.preferIPv4Stack=true -Djava.library.path="$DDB/DynamoDBLocal_lib" \
    -cp "$ENGINES/launcher:$DDB/DynamoDBLocal.jar:$DDB/DynamoDBLocal_lib/*" \
    DynamoDbLocalLauncher -inMemory -port @PORT@ -disableTelemetry || failed=1
fi
if [[ "$failed" -ne 0 ]]; then
  SLUICE_ENGINES_RUN_DIR="$RUN_DIR" bash "$HERE/stop.sh" --quiet
  rm -f "$RUN_DIR/engines.env.partial"
  die "engines failed to start (logs in $RUN_DIR)"
fi

mv "$RUN_DIR/engines.env.partial" "$RUN_DIR/engines.env"
log "env file: $RUN_DIR/engines.env"
sed 's/^/[engines]   /' "$RUN_DIR/engines.env"

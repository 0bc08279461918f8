#!/usr/bin/env bash
# Runs the Powertools reference benchmark against the local engine and writes one JSON file.
#   SLUICE_MINISTACK_ENDPOINT=http://127.0.0.1:<port> bash infra/bench/powertools/run.sh <out.json>
# The venv lives at ${SLUICE_CACHE:-$HOME/.cache/sluice}/bench/powertools-venv and is (re)installed
# from requirements.txt only when that file changes. Needs python3.11 (Lambda's python3.11 runtime).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SLUICE_CACHE:-$HOME/.cache/sluice}/bench/powertools-venv"

die() {
  printf '[powertools-bench] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ $# -eq 1 && -n "$1" ]] || die "usage: run.sh <out.json>"
OUT="$1"
[[ -n "${SLUICE_MINISTACK_ENDPOINT:-}" ]] ||
  die "SLUICE_MINISTACK_ENDPOINT is not set: start the engines (infra/engines/start.sh) and source their engines.env"

PYTHON="${SLUICE_BENCH_PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (the reference runs on Python 3.11)"

stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  printf '[powertools-bench] installing %s\n' "$VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "could not create the venv at $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" ||
    die "pip install -r $HERE/requirements.txt failed"
  printf '%s\n' "$want" >"$stamp"
fi

exec "$VENV/bin/python" "$HERE/bench.py" --endpoint "$SLUICE_MINISTACK_ENDPOINT" --out "$OUT"

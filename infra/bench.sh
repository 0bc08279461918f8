#!/usr/bin/env bash
# The benchmark command (issue 5): `bash infra/bench.sh` measures everything in one run and
# writes docs/benchmarks.md.
#   1. installs the local engines (infra/engines/install.sh, once) and starts them on free
#      127.0.0.1 ports, in a run dir of its own (stopped on exit)
#   2. builds release: sluice-local, the bench binaries (sluice-bench, bench-hello-lambda,
#      bench-hello-http), and the four Lambda bootstraps with cargo lambda
#   3. requests (ministack), the Powertools reference (infra/bench/powertools/run.sh),
#      cold start, throughput, CPU (ministack), contention (DynamoDB Local)
#   4. renders docs/benchmarks.md from the JSON files, and prints the phase times
# JSON files go to ${SLUICE_BENCH_OUT:-$SLUICE_CACHE/bench/last}. Not part of the test command.
# Exits non-zero if any phase failed or a part is missing (the report then says "not measured").
# Knobs (environment): BENCH_COLD_RUNS (25), BENCH_CONCURRENCY (32), BENCH_COUNT (100000),
# BENCH_SECONDS (20), BENCH_CPU_EVENTS (300), BENCH_CONTENTION_SECONDS (10), SLUICE_POWERTOOLS_RUN
# (infra/bench/powertools/run.sh); see docs/configuration.md.
set -euo pipefail
exec </dev/null
export LC_NUMERIC=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
export SLUICE_ENGINES_RUN_DIR="$SLUICE_CACHE/engines/run/bench-$$"
OUT="${SLUICE_BENCH_OUT:-$SLUICE_CACHE/bench/last}"
REL="$CARGO_TARGET_DIR/release"
LAMBDA="$CARGO_TARGET_DIR/lambda"
# Every phase's time also goes to this file, which the report shows.
PHASES_FILE="$OUT/phases.txt"

# shellcheck source=infra/phases.sh
source "$ROOT/infra/phases.sh"
engines_started=0
started_at="$(now)"

finish() {
  local status=$?
  set +e
  if [[ "$engines_started" -eq 1 ]]; then
    bash "$ROOT/infra/engines/stop.sh" --quiet >/dev/null
    rm -rf "$SLUICE_ENGINES_RUN_DIR"
  fi
  printf '\n==> summary (JSON in %s)\n' "$OUT"
  local line
  for line in "${phases[@]}"; do
    printf '  %s\n' "$line"
  done
  printf '  %-10s %7.1fs\n' total "$(echo "$(now) - $started_at" | awk '{print $1 - $3}')"
  if [[ "${#failed[@]}" -gt 0 || "$status" -ne 0 ]]; then
    printf 'FAILED: %s\n' "${failed[*]:-interrupted}"
    [[ "$status" -ne 0 ]] || status=1
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_engines() {
  engines_started=1
  bash infra/engines/start.sh || return 1
  # shellcheck source=/dev/null
  source "$SLUICE_ENGINES_RUN_DIR/engines.env"
}

build() {
  cargo build --release -p sluice-local -p sluice-tests --bins || return 1
  PATH="$SLUICE_CACHE/engines/venv/bin:$PATH" cargo lambda build --release \
    --bin intake --bin executor --bin replay --bin sweeper
}

bench() { "$REL/sluice-bench" "$@" --out "$OUT" >"$OUT/$1.log"; }

# The Powertools reference (its own venv, made by its run.sh). SLUICE_POWERTOOLS_RUN points at
# another copy of run.sh (e.g. a branch's worktree before it is merged).
powertools() {
  local run="${SLUICE_POWERTOOLS_RUN:-infra/bench/powertools/run.sh}"
  rm -f "$OUT/powertools.json"
  [[ -f "$run" ]] || {
    echo "$run not found: the Powertools rows will say \"not measured\"" >&2
    return 1
  }
  bash "$run" "$OUT/powertools.json"
}

coldstart() {
  bench coldstart --runs "${BENCH_COLD_RUNS:-25}" \
    --bin "hello=$REL/bench-hello-lambda" \
    --bin "intake=$LAMBDA/intake/bootstrap" --bin "executor=$LAMBDA/executor/bootstrap" \
    --bin "replay=$LAMBDA/replay/bootstrap" --bin "sweeper=$LAMBDA/sweeper/bootstrap"
}

throughput() {
  bench throughput --sluice-local "$REL/sluice-local" --hello "$REL/bench-hello-http" \
    --concurrency "${BENCH_CONCURRENCY:-32}" --count "${BENCH_COUNT:-100000}" \
    --seconds "${BENCH_SECONDS:-20}"
}

report() {
  "$REL/sluice-bench" report --out "$OUT" --doc docs/benchmarks.md --command "bash infra/bench.sh"
}

rm -rf "$OUT"
mkdir -p "$OUT"

# Setup: nothing else can run without it.
run_phase install bash infra/engines/install.sh || exit 1
run_phase engines start_engines || exit 1
run_phase build build || exit 1

# The parts: all of them run, so one report shows every figure that could be measured.
run_phase requests bench requests || true
run_phase powertools powertools || true
run_phase coldstart coldstart || true
run_phase throughput throughput || true
run_phase cpu bench cpu --hello "$REL/bench-hello-http" --events "${BENCH_CPU_EVENTS:-300}" || true
run_phase contention bench contention --seconds "${BENCH_CONTENTION_SECONDS:-10}" || true
run_phase report report || true

[[ "${#failed[@]}" -eq 0 ]]

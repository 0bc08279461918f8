#!/usr/bin/env bash
# The test command: `bash infra/test.sh` from a fresh clone does everything.
#   1. installs the local engines into ${SLUICE_CACHE:-$HOME/.cache/sluice}/engines (once)
#   2. starts ministack and DynamoDB Local on free 127.0.0.1 ports (stopped again on exit)
#   3. cargo fmt --check, cargo clippy -D warnings, cfn-lint template.yaml
#   4. cargo test --workspace against the engines
#   5. cargo lambda build --release of every function's bootstrap (sizes printed)
# Builds go to ${CARGO_TARGET_DIR:-$SLUICE_CACHE/target} so repeated runs stay warm. Every check
# runs even after an earlier one failed; the exit status is non-zero if any phase failed.
set -euo pipefail
exec </dev/null
export LC_NUMERIC=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
# A run dir of its own, so that parallel runs on one machine never stop each other's engines.
export SLUICE_ENGINES_RUN_DIR="$SLUICE_CACHE/engines/run/test-$$"

# shellcheck source=infra/phases.sh
source "$ROOT/infra/phases.sh"
engines_started=0

finish() {
  local status=$?
  set +e
  if [[ "$engines_started" -eq 1 ]]; then
    bash "$ROOT/infra/engines/stop.sh" --quiet >/dev/null
  fi
  if [[ "${#failed[@]}" -eq 0 && "$status" -eq 0 ]]; then
    rm -rf "$SLUICE_ENGINES_RUN_DIR"
  elif [[ -d "$SLUICE_ENGINES_RUN_DIR" ]]; then
    printf 'engine logs kept in %s\n' "$SLUICE_ENGINES_RUN_DIR"
  fi
  printf '\n==> summary\n'
  local line
  for line in "${phases[@]}"; do
    printf '  %s\n' "$line"
  done
  if [[ "${#failed[@]}" -gt 0 || "$status" -ne 0 ]]; then
    printf 'FAILED: %s\n' "${failed[*]:-interrupted}"
    [[ "$status" -ne 0 ]] || status=1
  else
    printf 'all phases passed\n'
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

require_toolchain() {
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
    return 1
  }
  cargo fmt --version >/dev/null 2>&1 || {
    echo "cargo fmt not found: rustup component add rustfmt" >&2
    return 1
  }
  cargo clippy --version >/dev/null 2>&1 || {
    echo "cargo clippy not found: rustup component add clippy" >&2
    return 1
  }
}

cfn_lint() {
  [[ -f template.yaml ]] || {
    echo "template.yaml not found at the repository root" >&2
    return 1
  }
  "$SLUICE_CACHE/engines/venv/bin/cfn-lint" template.yaml
}

# The Lambda bootstraps, as `sam build` makes them (x86_64 here: the aarch64 target cannot be
# installed on these machines; deployments build arm64). Prints each binary's size.
lambda_build() {
  PATH="$SLUICE_CACHE/engines/venv/bin:$PATH" cargo lambda build --release \
    --bin intake --bin executor --bin replay --bin sweeper || return 1
  local bin
  for bin in intake executor replay sweeper; do
    printf '  %-9s %s bytes\n' "$bin" "$(stat -c %s "$CARGO_TARGET_DIR/lambda/$bin/bootstrap")"
  done
}

start_engines() {
  engines_started=1
  bash infra/engines/start.sh || return 1
  # shellcheck source=/dev/null
  source "$SLUICE_ENGINES_RUN_DIR/engines.env"
}

# Setup: nothing else can run without it.
run_phase toolchain require_toolchain || exit 1
run_phase install bash infra/engines/install.sh || exit 1
run_phase engines start_engines || exit 1

# Checks: all of them run, so one report shows every problem.
run_phase fmt cargo fmt --all -- --check || true
run_phase clippy cargo clippy --workspace --all-targets -- -D warnings || true
run_phase cfn-lint cfn_lint || true
run_phase test cargo test --workspace || true
run_phase lambda lambda_build || true

[[ "${#failed[@]}" -eq 0 ]]

#!/usr/bin/env bash
# Runs the whole of Sluice on this machine: intake, the API, executor loops, the sweeper and a
# demo connector in one process on 127.0.0.1 (port 8787 by default; --port 0 picks a free one).
# It prints the URL, the secrets it generated, a signed curl example and an API token.
#
#   bash infra/run-local.sh                 # in-memory state, infra/sluice.example.yaml
#   bash infra/run-local.sh --port 0        # any free port
#   bash infra/run-local.sh --aws --create  # DynamoDB + SQS at $SLUICE_AWS_ENDPOINT (ministack)
#   bash infra/run-local.sh --help          # every option
#
# Needs only a Rust toolchain: it builds with cargo (release profile) into
# ${CARGO_TARGET_DIR:-~/.cache/sluice/target}; the first build takes a few minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

command -v cargo >/dev/null 2>&1 || {
  echo "cargo not found: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
}

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SLUICE_CACHE:-$HOME/.cache/sluice}/target}"
# `cargo run --release -p sluice-local -- "$@"`, in two steps so that the server replaces this
# shell: Ctrl-C and SIGTERM reach it directly and stop it cleanly.
cargo build --release -p sluice-local
exec "$CARGO_TARGET_DIR/release/sluice-local" "$@"

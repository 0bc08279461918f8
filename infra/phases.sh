# Phase bookkeeping shared by infra/test.sh and infra/bench.sh (sourced, not run).
# run_phase NAME COMMAND...: runs COMMAND and records its time and result in `phases` (and in
# the file $PHASES_FILE when set); a failed phase is added to `failed` and returns 1.
phases=()
failed=()

now() { printf '%s' "${EPOCHREALTIME:-$SECONDS}"; }

run_phase() {
  local name="$1" start end result=ok
  shift
  printf '\n==> %s: %s\n' "$name" "$*"
  start="$(now)"
  "$@" || result=FAILED
  end="$(now)"
  phases+=("$(printf '%-10s %7.1fs  %s' "$name" "$(echo "$end - $start" | awk '{print $1 - $3}')" "$result")")
  if [[ -n "${PHASES_FILE:-}" ]]; then
    printf '%s\n' "${phases[-1]}" >>"$PHASES_FILE"
  fi
  if [[ "$result" != ok ]]; then
    failed+=("$name")
    return 1
  fi
}

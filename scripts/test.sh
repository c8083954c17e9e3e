#!/usr/bin/env bash
# Runs the whole test suite, installing what the tests need first (SIPp from Debian's sip-tester,
# linphonec from linphone-cli for the SHA-256 digest and TLS tests, baresip from baresip-core for the
# TLS tests, PostgreSQL for the store's second backend and the HA pair: tests start their own servers
# on 127.0.0.1, chromium and nodejs for the wallboard).
# Usage: scripts/test.sh   (as root, or with sipp and linphonec already installed)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=()
command -v sipp >/dev/null 2>&1 || PKGS+=(sip-tester)
command -v linphonec >/dev/null 2>&1 || PKGS+=(linphone-cli)
# baresip: the TLS tests' softphone (Debian's SIPp is built without TLS). The core package: the
# `baresip` metapackage only adds GUI and video modules through its Recommends.
command -v baresip >/dev/null 2>&1 || PKGS+=(baresip-core)
# PostgreSQL server binaries: the store and HA tests start their own throwaway servers on loopback.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || PKGS+=(postgresql)
# The wallboard test: headless Chromium, driven by a dependency-free Node script.
command -v chromium >/dev/null 2>&1 || PKGS+=(chromium)
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
if [ ${#PKGS[@]} -gt 0 ]; then
  echo "installing ${PKGS[*]}..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PKGS[@]}" >/dev/null
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== the sans-IO rule: the core crates do not depend on tokio"
for c in sip-core media; do
  if cargo tree -p "$c" -e normal --prefix none | grep -qE '^tokio '; then
    echo "error: $c depends on tokio (see STYLE.md: sans-IO core)" >&2
    exit 1
  fi
done

echo "== tests"
# Optimized, but without the shipped binary's whole-program LTO: the `ci` profile (Cargo.toml),
# built in target/ci/ so it never replaces target/release/switchboard (what the benches run).
cargo test --workspace --profile ci

#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test GuildKit:
# Erlang/OTP and Elixir from Debian (hex.pm is unreachable, so no other source),
# and the Rust toolchain components cargo fmt/clippy need.
set -eu

if ! command -v mix >/dev/null 2>&1 || ! command -v erl >/dev/null 2>&1; then
  echo "==> installing Erlang/OTP and Elixir from Debian"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q erlang-nox erlang-dev elixir
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      rustup component add "$component"
    fi
  done
fi

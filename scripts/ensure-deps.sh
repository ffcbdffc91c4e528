#!/bin/sh
# Installs what a fresh Debian machine lacks to build and test GuildKit:
# Erlang/OTP, Elixir and Dialyzer from Debian (hex.pm is unreachable, so no other
# source), and the Rust toolchain components cargo fmt/clippy need.
set -eu

# Debian packages for each command `make` needs. erlang-nox does not pull in
# erlang-dialyzer, so a machine that already has Erlang may still lack it.
missing=""
if ! command -v erl >/dev/null 2>&1; then missing="$missing erlang-nox erlang-dev"; fi
if ! command -v mix >/dev/null 2>&1; then missing="$missing elixir"; fi
if ! command -v dialyzer >/dev/null 2>&1; then missing="$missing erlang-dialyzer"; fi

if [ -n "$missing" ]; then
  echo "==> installing from Debian:$missing"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
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

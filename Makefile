# Every target installs what a fresh Debian machine lacks (scripts/ensure-deps.sh) first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build check test demo bench clean

setup:
	@./scripts/ensure-deps.sh

build: setup
	mix compile

# The static checks of `make test`, without running the tests.
check: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	mix format --check-formatted
	mix compile --warnings-as-errors

test: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace
	mix format --check-formatted
	mix compile --warnings-as-errors
	mix test --include slow

demo: setup
	mix guild_kit.demo --baseline --report demo_report.html

bench: setup
	MIX_ENV=prod mix run bench/sorted_set.exs
	MIX_ENV=prod mix run bench/fanout.exs

clean:
	mix clean
	cargo clean

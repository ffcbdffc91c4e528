# Every target installs what a fresh Debian machine lacks (scripts/ensure-deps.sh) first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build check dialyzer test demo bench clean

setup:
	@./scripts/ensure-deps.sh

build: setup
	mix compile

# The static checks of `make test`: formatting, lints, warnings and Dialyzer.
check: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	mix format --check-formatted
	mix compile --warnings-as-errors
	./scripts/dialyzer.sh

# Dialyzer on lib/ and examples/; the PLT is cached under _build/dialyzer/.
dialyzer: setup
	./scripts/dialyzer.sh

# The static checks, then every test (slow ones included).
test: check
	cargo test --workspace
	mix test --include slow

demo: setup
	mix guild_kit.demo --baseline --report demo_report.html

bench: setup
	MIX_ENV=prod mix run bench/sorted_set.exs
	MIX_ENV=prod mix run bench/fanout.exs

clean:
	mix clean
	cargo clean

# Slow tests (large sizes, multi-node) are excluded from a bare `mix test`;
# `make test` runs them with `--include slow`.
ExUnit.start(exclude: [:slow])

# Slow tests (large sizes, multi-node) are excluded from a bare `mix test`;
# `make test` runs them with `--include slow`.
ExUnit.start(
  exclude: [:slow],
  formatters: [ExUnit.CLIFormatter, GuildKit.Test.FailureSummary]
)

ExUnit.after_suite(fn _result -> GuildKit.Test.FailureSummary.print() end)

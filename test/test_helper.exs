# Slow tests (large sizes, multi-node) are excluded from a bare `mix test`;
# `make test` runs them with `--include slow`.
# A message a test waits for may come through several processes on a loaded 2-core
# machine: assert_receive/2 waits up to 5 s unless told otherwise (refute_receive
# keeps its short default; the suite's refutes give their own windows).
ExUnit.start(
  exclude: [:slow],
  assert_receive_timeout: 5_000,
  formatters: [ExUnit.CLIFormatter, GuildKit.Test.FailureSummary]
)

ExUnit.after_suite(fn _result -> GuildKit.Test.FailureSummary.print() end)

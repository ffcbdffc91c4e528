# Every .ex and .exs file of the project (test/guild_kit/formatter_test.exs checks it).
[
  inputs: [
    "{mix,.formatter}.exs",
    "{config,lib,test,bench,examples,mix}/**/*.{ex,exs}"
  ]
]

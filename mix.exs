# The cargo compiler must exist before Mix compiles lib/, so it is loaded here.
Code.require_file("mix/compile.guild_kit_cargo.exs", __DIR__)

defmodule GuildKit.MixProject do
  use Mix.Project

  def project do
    [
      app: :guild_kit,
      version: "0.1.0",
      elixir: "~> 1.14",
      description:
        "Rust-powered toolkit for coordinating million-member communities on the BEAM.",
      compilers: [:guild_kit_cargo] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: [],
      test_coverage: [ignore_modules: [Mix.Tasks.Compile.GuildKitCargo]]
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {GuildKit.Application, []}]
  end

  # examples/ holds the reference integration and `mix guild_kit.demo`; it is compiled
  # for development and tests, never into the library that dependents get.
  defp elixirc_paths(:test), do: ["lib", "examples", "test/support"]
  defp elixirc_paths(:dev), do: ["lib", "examples"]
  defp elixirc_paths(_), do: ["lib"]
end

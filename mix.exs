# The cargo compiler must exist before Mix compiles lib/, so it is loaded here.
Code.require_file("mix/compile.guild_kit_cargo.exs", __DIR__)

defmodule GuildKit.MixProject do
  use Mix.Project

  @version "0.1.0"
  # The public repository, for ExDoc's source links and the package links.
  @source_url "https://github.com/guild-kit/guild_kit"

  def project do
    [
      app: :guild_kit,
      version: @version,
      elixir: "~> 1.14",
      description:
        "Rust-powered toolkit for coordinating million-member communities on the BEAM.",
      compilers: [:guild_kit_cargo] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      start_permanent: Mix.env() == :prod,
      deps: [],
      test_coverage: [ignore_modules: [Mix.Tasks.Compile.GuildKitCargo]],
      name: "GuildKit",
      source_url: @source_url,
      docs: docs(),
      package: package()
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

  # For ExDoc (`mix docs`, once it can be installed: it needs hex). A regex groups a
  # component's submodules with it.
  defp docs do
    [
      main: "readme",
      source_ref: "v#{@version}",
      extras: ["README.md", "bench/RESULTS.md": [title: "Benchmark results"]],
      groups_for_modules: [
        "Data structures": [GuildKit.SortedSet, GuildKit.MemberList],
        "Fan-out": [
          GuildKit.Fanout,
          ~r/^GuildKit\.Fanout\./,
          GuildKit.Relay,
          ~r/^GuildKit\.Relay\./
        ],
        Permissions: [GuildKit.Permissions, GuildKit.Audience],
        Diagnostics: [GuildKit.MemoryEstimator, ~r/^GuildKit\.MemoryEstimator\./]
      ],
      # The library only: the example guild and the demo are compiled in :dev, but they
      # are not part of the package.
      filter_modules: fn module, _metadata -> library_module?(module) end
    ]
  end

  @doc false
  # True for a module compiled from lib/, not from examples/ or test/support/. The
  # source path is compared by its end, so a build moved from another checkout works.
  def library_module?(module) do
    source = module.module_info(:compile) |> Keyword.fetch!(:source) |> to_string()
    lib = Path.wildcard(Path.join(__DIR__, "lib/**/*.ex"))
    Enum.any?(lib, &String.ends_with?(source, "/" <> Path.relative_to(&1, __DIR__)))
  end

  # What `mix hex.build` puts in the package: the Elixir library, the cargo compiler
  # that mix.exs loads, and the Rust workspace's manifests, lock file and sources
  # (benches too: the core's Cargo.toml declares them), never target/ or priv/.
  defp package do
    [
      licenses: ["MIT"],
      links: %{
        "GitHub" => @source_url,
        "Benchmarks" => "#{@source_url}/blob/main/bench/RESULTS.md"
      },
      files: ~w(
        lib mix/compile.guild_kit_cargo.exs mix.exs .formatter.exs README.md LICENSE
        Cargo.toml Cargo.lock native/*/Cargo.toml native/*/src native/*/benches
      )
    ]
  end
end

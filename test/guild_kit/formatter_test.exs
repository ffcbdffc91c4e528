defmodule GuildKit.FormatterTest do
  @moduledoc """
  `mix format --check-formatted` (run by `make test`) checks every .ex and .exs file
  of the project: none is left out of the inputs of `.formatter.exs`.
  """
  use ExUnit.Case, async: true

  # Build output and scratch directories (all in .gitignore), never sources.
  @not_sources ~w(_build deps target priv tmp cover doc)

  test "the formatter's inputs cover every .ex and .exs file" do
    root = Path.expand("../..", __DIR__)
    {formatter, _binding} = Code.eval_file(Path.join(root, ".formatter.exs"))

    covered =
      for pattern <- Keyword.fetch!(formatter, :inputs),
          file <- Path.wildcard(Path.join(root, pattern), match_dot: true),
          into: MapSet.new(),
          do: file

    sources =
      for entry <- File.ls!(root),
          entry not in @not_sources,
          path = Path.join(root, entry),
          file <-
            if(File.dir?(path),
              do: Path.wildcard(Path.join(path, "**/*.{ex,exs}"), match_dot: true),
              else: [path]
            ),
          Path.extname(file) in [".ex", ".exs"],
          do: Path.relative_to(file, root)

    assert "mix.exs" in sources and "examples/guild_kit_examples/guild.ex" in sources

    left_out = Enum.reject(sources, &MapSet.member?(covered, Path.join(root, &1)))
    assert left_out == [], "not checked by mix format: #{inspect(left_out)}"
  end
end

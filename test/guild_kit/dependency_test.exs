defmodule GuildKit.DependencyTest do
  @moduledoc """
  GuildKit must work as a Mix dependency: a throwaway project depends on it by path,
  compiles, and calls GuildKit.SortedSet.
  """
  use ExUnit.Case, async: true

  @moduletag :slow
  @moduletag :tmp_dir
  @moduletag timeout: 300_000

  test "a project that depends on guild_kit by path compiles and uses it", %{tmp_dir: tmp_dir} do
    guild_kit = Path.expand("../..", __DIR__)
    File.mkdir_p!(Path.join(tmp_dir, "lib"))

    File.write!(Path.join(tmp_dir, "mix.exs"), """
    defmodule Consumer.MixProject do
      use Mix.Project

      def project do
        [app: :consumer, version: "0.0.1", deps: [{:guild_kit, path: #{inspect(guild_kit)}}]]
      end
    end
    """)

    File.write!(Path.join(tmp_dir, "lib/consumer.ex"), """
    defmodule Consumer do
      def run do
        [:c, :a, :b]
        |> GuildKit.SortedSet.from_enumerable()
        |> GuildKit.SortedSet.add(:d)
        |> GuildKit.SortedSet.to_list()
      end
    end
    """)

    env = [{"MIX_ENV", "dev"}, {"MIX_EXS", nil}, {"MIX_BUILD_PATH", nil}, {"MIX_DEPS_PATH", nil}]

    {output, status} =
      System.cmd("mix", ["compile"], cd: tmp_dir, env: env, stderr_to_stdout: true)

    assert status == 0, output

    {output, status} =
      System.cmd("mix", ["run", "-e", "IO.inspect(Consumer.run())"],
        cd: tmp_dir,
        env: env,
        stderr_to_stdout: true
      )

    assert status == 0, output
    assert output =~ "[:a, :b, :c, :d]"
  end
end

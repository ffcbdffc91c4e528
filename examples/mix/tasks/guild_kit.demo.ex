defmodule Mix.Tasks.GuildKit.Demo do
  @shortdoc "Runs a million-member list on GuildKit.SortedSet next to :gb_sets"
  @moduledoc """
  Runs the member-list showcase: a 1,000,000-member `GuildKit.SortedSet` of realistic
  member keys under a stream of joins, leaves and status changes, timed next to the
  same work on `:gb_sets`.

      mix guild_kit.demo [--members N] [--operations N] [--seed N]
  """
  use Mix.Task

  @switches [members: :integer, operations: :integer, seed: :integer]

  @impl Mix.Task
  def run(args) do
    case OptionParser.parse(args, strict: @switches) do
      {opts, [], []} ->
        Mix.Task.run("app.start")
        GuildKit.Examples.MemberListShowcase.run(opts)

      {_, rest, invalid} ->
        Mix.raise("usage: mix guild_kit.demo [--members N] [--operations N] [--seed N] " <>
                    "(bad arguments: #{inspect(rest ++ Enum.map(invalid, &elem(&1, 0)))})")
    end
  end
end

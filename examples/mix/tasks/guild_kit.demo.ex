defmodule Mix.Tasks.GuildKit.Demo do
  # The help shows the defaults the demo really uses.
  defaults = GuildKit.Examples.Demo.defaults()

  format = fn n ->
    n |> Integer.to_string() |> String.replace(~r/\B(?=(\d{3})+$)/, ",")
  end

  @shortdoc "Runs a million-member guild on GuildKit relays, optionally beside direct fan-out and plain OTP"
  @moduledoc """
  Runs a simulated guild of a million members on GuildKit relays and reports what it does to
  the guild process: member-list update latency, events per second, the time until
  every active session has an event, the state's size and how long measuring it took,
  and normal-scheduler stalls. See `GuildKit.Examples.Demo`.

      mix guild_kit.demo [options]

  ## Options

    * `--members N` - members in the guild (default #{format.(defaults[:members])})
    * `--sessions N` - online users, one session process each (default #{format.(defaults[:sessions])})
    * `--active F` - fraction of sessions that are active, 0 to 1 (default #{defaults[:active]})
    * `--seconds N` - how long the stream of events runs (default #{defaults[:seconds]})
    * `--rate N` - events per second in the stream (default #{defaults[:rate]})
    * `--nodes N` - spread the sessions over N local peer nodes (default 0: this node)
    * `--baseline` - run the same guild with direct fan-out and on plain OTP too, side
      by side
    * `--report PATH` - also write the report as a self-contained HTML page
    * `--seed N` - random seed (default 42)
    * `--help` - print this help
  """
  use Mix.Task

  @switches [
    members: :integer,
    sessions: :integer,
    active: :float,
    seconds: :integer,
    rate: :integer,
    nodes: :integer,
    baseline: :boolean,
    report: :string,
    seed: :integer,
    help: :boolean
  ]
  @usage "usage: mix guild_kit.demo [--members N] [--sessions N] [--active 0..1] [--seconds N] " <>
           "[--rate N] [--nodes N] [--baseline] [--report PATH] [--seed N]"

  @impl Mix.Task
  def run(args) do
    if "--help" in args do
      Mix.shell().info(@moduledoc)
    else
      opts = parse!(args)
      Mix.Task.run("app.start")
      GuildKit.Examples.Demo.run(opts)
    end

    :ok
  end

  defp parse!(args) do
    case OptionParser.parse(args, strict: @switches) do
      {opts, [], []} ->
        validate!(opts)

      {_, rest, invalid} ->
        bad = Enum.map(invalid, fn {option, _} -> option end) ++ rest
        usage!("unknown or malformed: #{Enum.join(bad, " ")}")
    end
  end

  defp validate!(opts) do
    opts = Keyword.merge(GuildKit.Examples.Demo.defaults(), Keyword.delete(opts, :help))

    cond do
      opts[:members] < 1 ->
        usage!("--members must be at least 1")

      opts[:sessions] < 0 or opts[:sessions] > opts[:members] ->
        usage!("--sessions must be between 0 and --members")

      opts[:active] < 0 or opts[:active] > 1 ->
        usage!("--active must be between 0 and 1")

      opts[:seconds] < 1 ->
        usage!("--seconds must be at least 1")

      opts[:rate] < 1 ->
        usage!("--rate must be at least 1")

      opts[:nodes] < 0 or opts[:nodes] > 8 ->
        usage!("--nodes must be between 0 and 8")

      opts[:report] && not File.dir?(Path.dirname(Path.expand(opts[:report]))) ->
        usage!("--report: no such directory")

      true ->
        opts
    end
  end

  @spec usage!(String.t()) :: no_return()
  defp usage!(problem), do: Mix.raise("#{problem}. #{@usage}")
end

# Benchmarks GuildKit.Fanout against a plain send/2 loop, locally and across two peer
# nodes. Run with:
#
#     MIX_ENV=prod mix run bench/fanout.exs [--sizes 10000,100000] [--rounds 7]
#
# For each receiver count, placement (local, or spread evenly over 2 peers) and mode,
# it measures:
#
#   * blocked - how long the send call keeps the caller busy;
#   * served  - time from the call until every receiver has the message (each receiver
#               bumps a counter on its node; the one that completes the count tells the
#               benchmark process, which notes the time on arrival).
#
# The message is a 200-byte binary. Each figure is the median of --rounds rounds, after
# one warm-up round, with min and max; each round runs every mode once, in turn. It
# also times the split of 100k pids: the NIF against Enum.group_by/2 by node then
# :erlang.phash2/2 in Elixir.
#
# Benchee is unavailable (no hex.pm), and test/support is not compiled in :prod, so the
# peer start and the receiver code live here; the receiver module's object code is
# loaded onto the peers with :code.load_binary/3.

Code.require_file("support/harness.exs", __DIR__)

# The receivers run on the peers too; their object code is kept to load it there.
{:module, Bench.Receiver, receiver_beam, _} =
  defmodule Bench.Receiver do
    # A receiver counts each message it gets; the one that brings the count to the
    # target tells `notify` when.
    def start(count, notify) do
      counter = :atomics.new(2, signed: true)
      pids = for _ <- 1..count, do: spawn(fn -> loop(counter, notify) end)
      {counter, pids}
    end

    # Starts a round: the next `target` messages complete it.
    def arm(counter, target) do
      :atomics.put(counter, 1, 0)
      :atomics.put(counter, 2, target)
      :ok
    end

    def stop(pids), do: Enum.each(pids, &Process.exit(&1, :kill))

    defp loop(counter, notify) do
      receive do
        _message ->
          if :atomics.add_get(counter, 1, 1) == :atomics.get(counter, 2) do
            send(notify, {:all_served, node()})
          end

          loop(counter, notify)
      end
    end
  end

defmodule Bench.Fanout do
  alias GuildKit.Bench.Harness
  alias GuildKit.Fanout

  @message :binary.copy(<<7>>, 200)

  def run(argv, receiver_beam) do
    {opts, _, _} =
      OptionParser.parse(argv,
        strict: [sizes: :string, rounds: :integer, modes: :string, placements: :string]
      )

    modes =
      (opts[:modes] || "default,pack,offload,offload_pack")
      |> String.split(",")
      |> Enum.map(&String.to_existing_atom/1)

    placements =
      (opts[:placements] || "local,peers")
      |> String.split(",")
      |> Enum.map(&String.to_existing_atom/1)

    sizes =
      (opts[:sizes] || "10000,100000") |> String.split(",") |> Enum.map(&String.to_integer/1)

    rounds = opts[:rounds] || 7

    {:ok, _} = Application.ensure_all_started(:guild_kit)
    peers = start_peers(2, receiver_beam)
    header(peers, rounds)

    for size <- sizes, placement <- placements do
      groups = receivers(size, placement, peers)
      pids = groups |> Enum.flat_map(fn {_node, _counter, pids} -> pids end) |> Enum.shuffle()
      samples = measure([:plain | modes], pids, groups, rounds)
      baseline = Map.fetch!(samples, :plain)

      for mode <- [:plain | modes] do
        report(size, placement, mode, Map.fetch!(samples, mode), baseline)
      end

      stop_receivers(groups)
    end

    split_bench(peers)
  end

  # -- peers -----------------------------------------------------------------------

  defp start_peers(count, receiver_beam) do
    {_, 0} = System.cmd("epmd", ["-daemon"])
    {:ok, _} = :net_kernel.start([:"guild_kit_bench_#{System.pid()}@127.0.0.1", :longnames])
    otp = :code.lib_dir()
    paths = :code.get_path() |> Enum.reject(&List.starts_with?(&1, otp))
    args = Enum.flat_map(paths, &[~c"-pa", &1])

    for i <- 1..count do
      name = :"guild_kit_bench_peer#{i}_#{System.pid()}"

      {:ok, _peer, node} =
        :peer.start_link(%{name: name, host: ~c"127.0.0.1", longnames: true, args: args})

      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:guild_kit])

      {:module, Bench.Receiver} =
        :erpc.call(node, :code, :load_binary, [Bench.Receiver, ~c"bench", receiver_beam])

      node
    end
  end

  # -- receivers -------------------------------------------------------------------

  defp receivers(size, :local, _peers) do
    {counter, pids} = Bench.Receiver.start(size, self())
    [{node(), counter, pids}]
  end

  defp receivers(size, :peers, peers) do
    per_peer = div(size, length(peers))

    for node <- peers do
      {counter, pids} = :erpc.call(node, Bench.Receiver, :start, [per_peer, self()])
      {node, counter, pids}
    end
  end

  defp stop_receivers(groups) do
    for {node, _counter, pids} <- groups do
      :erpc.call(node, Bench.Receiver, :stop, [pids])
    end
  end

  # -- measurement -----------------------------------------------------------------

  # Runs every mode once per round, in turn, so that slow drifts of the machine and
  # of the VM (run-queue balance, allocator state) weigh on all modes alike; running
  # all rounds of one mode back to back favoured whichever mode came later. The first
  # round warms up and is not counted.
  defp measure(modes, pids, groups, rounds) do
    samples =
      for round <- 0..rounds, mode <- modes, do: {round, mode, round_trip(mode, pids, groups)}

    samples
    |> Enum.reject(fn {round, _mode, _sample} -> round == 0 end)
    |> Enum.group_by(fn {_round, mode, _sample} -> mode end, fn {_, _, sample} -> sample end)
  end

  defp round_trip(mode, pids, groups) do
    for {node, counter, group_pids} <- groups do
      :ok = :erpc.call(node, Bench.Receiver, :arm, [counter, length(group_pids)])
    end

    flush()
    # A collection now, so that the caller's own pending garbage (this loop's, and the
    # receiver list it just built) is not collected inside the measured call.
    :erlang.garbage_collect()
    start = System.monotonic_time()
    send_in(mode, pids)
    blocked = System.monotonic_time() - start

    served =
      Enum.reduce(groups, 0, fn {node, _, _}, latest ->
        # Monotonic clocks differ between nodes, so the time is taken here, on
        # arrival of the notice (a few µs later for a local one, ~0.1 ms for a peer's).
        receive do
          {:all_served, ^node} -> max(latest, System.monotonic_time() - start)
        after
          60_000 -> raise "#{node}: not every receiver was served within 60 s"
        end
      end)

    # Let workers and the garbage collector settle before the next round.
    Process.sleep(200)
    {to_ms(blocked), to_ms(served)}
  end

  defp send_in(:plain, pids), do: Enum.each(pids, &send(&1, @message))
  defp send_in(:default, pids), do: Fanout.send(pids, @message)
  defp send_in(:pack, pids), do: Fanout.send(pids, @message, pack: :binary)
  defp send_in(:offload, pids), do: Fanout.send(pids, @message, offload: true)
  defp send_in(:offload_pack, pids), do: Fanout.send(pids, @message, offload: true, pack: :binary)

  defp flush do
    receive do
      {:all_served, _} -> flush()
    after
      0 -> :ok
    end
  end

  # -- split -----------------------------------------------------------------------

  defp split_bench(peers) do
    workers = GuildKit.Fanout.Runtime.get().workers
    IO.puts("\n## Split of 100,000 pids into node groups and #{workers} worker buckets\n")

    IO.puts("""
    GuildKit: the NIF split (local pids into buckets, remote pids set aside) plus the
    Elixir grouping of the remote pids by node (the NIF cannot read a remote pid's node).
    Elixir A: Enum.group_by/2 by node, then :erlang.phash2/2 buckets for this node's
    group only, i.e. the same output. Elixir B: the same, with buckets for every group.
    Median of 21 runs.

    | pids | GuildKit | Elixir A | Elixir B | speed-up vs A | vs B |
    |---|---|---|---|---|---|\
    """)

    {_counter, local} = Bench.Receiver.start(100_000, self())
    split_row("100k on this node", local, workers)

    remote =
      Enum.flat_map(peers, fn node ->
        {_counter, pids} = :erpc.call(node, Bench.Receiver, :start, [33_000, self()])
        pids
      end)

    split_row("100k over 3 nodes", Enum.shuffle(Enum.take(local, 34_000) ++ remote), workers)
  end

  defp split_row(label, pids, workers) do
    ours = fn ->
      {_buckets, _counts, _n, remote, _m} = Fanout.split(pids, workers)
      Fanout.group_by_node(remote)
    end

    same_output = fn ->
      groups = Enum.group_by(pids, &node/1)
      {Enum.group_by(Map.get(groups, node(), []), &:erlang.phash2(&1, workers)), groups}
    end

    every_group = fn ->
      pids
      |> Enum.group_by(&node/1)
      |> Map.new(fn {node, group} ->
        {node, Enum.group_by(group, &:erlang.phash2(&1, workers))}
      end)
    end

    [ours_ms, a_ms, b_ms] = medians_ms([ours, same_output, every_group], 21)

    IO.puts(
      "| #{label} | #{fmt(ours_ms)} ms | #{fmt(a_ms)} ms | #{fmt(b_ms)} ms | " <>
        "#{fmt(a_ms / ours_ms)}x | #{fmt(b_ms / ours_ms)}x |"
    )
  end

  # Runs the functions in turns, each after a garbage collection, in a fresh process
  # whose heap is large enough that collections do not dominate either side, and
  # returns each one's median time.
  defp medians_ms(funs, runs) do
    Harness.in_big_process(
      fn ->
        Enum.each(funs, & &1.())

        samples =
          for _ <- 1..runs do
            for fun <- funs do
              :erlang.garbage_collect()
              elem(:timer.tc(fun), 0) / 1000
            end
          end

        samples |> Enum.zip() |> Enum.map(&median(Tuple.to_list(&1)))
      end,
      4_000_000
    )
  end

  # -- output ----------------------------------------------------------------------

  defp header(peers, rounds) do
    IO.puts("""
    # GuildKit.Fanout benchmark

    #{:erlang.system_info(:system_architecture)}, #{System.schedulers_online()} schedulers, \
    OTP #{:erlang.system_info(:otp_release)} (erts #{:erlang.system_info(:version)}), \
    Elixir #{System.version()}; peers: #{inspect(peers)}
    Config: #{inspect(GuildKit.Fanout.Runtime.get() |> Map.from_struct() |> Map.update!(:senders, &tuple_size/1))}
    Median of #{rounds} rounds after one warm-up (min-max), each round running every mode
    once in turn; message: 200-byte binary. Served vs plain: ratio of the medians.

    | receivers | placement | mode | caller blocked (ms) | all served (ms) | served vs plain |
    |---|---|---|---|---|---|\
    """)
  end

  defp report(size, placement, mode, samples, baseline) do
    {blocked, served} = Enum.unzip(samples)
    {_, plain_served} = Enum.unzip(baseline)
    ratio = median(served) / median(plain_served)

    IO.puts(
      "| #{size} | #{placement} | #{mode} | #{summary(blocked)} | #{summary(served)} | " <>
        "#{fmt(ratio)}x |"
    )
  end

  defp summary(values),
    do: "#{fmt(median(values))} (#{fmt(Enum.min(values))}-#{fmt(Enum.max(values))})"

  defp median(values), do: Enum.at(Enum.sort(values), div(length(values), 2))

  defp to_ms(native), do: System.convert_time_unit(native, :native, :microsecond) / 1000

  defp fmt(float) when float >= 100, do: :erlang.float_to_binary(float / 1, decimals: 0)
  defp fmt(float) when float >= 10, do: :erlang.float_to_binary(float / 1, decimals: 1)
  defp fmt(float), do: :erlang.float_to_binary(float / 1, decimals: 2)
end

Bench.Fanout.run(System.argv(), receiver_beam)

# Benchmarks GuildKit.Fanout against a plain send/2 loop, locally and across two peer
# nodes, with the baselines measured in the same run. Run with:
#
#     MIX_ENV=prod mix run bench/fanout.exs [--sizes 10000,100000] [--rounds 7]
#         [--placements local,peers] [--modes default,pack,offload,offload_pack]
#         [--tuning] [--no-split]
#
# For each receiver count, placement (local, or spread evenly over 2 peers) and mode,
# it measures:
#
#   * blocked - how long the send call keeps the caller busy;
#   * served  - time from the call until every receiver has the message (each receiver
#               bumps a counter on its node; the one that completes the count tells the
#               benchmark process, which notes the time on arrival).
#
# The baselines run in the same rounds: `plain` is `Enum.each(pids, &send(&1, msg))`;
# `bare_send` (blocked only) is one `send/2` of the whole list to another process,
# what Manifold's offload mode costs its caller (it checks nothing). Receivers only
# count. The message is a 200-byte binary. Each figure is the median of --rounds rounds
# after one warm-up round, with min and max; each round runs every mode once, in turn,
# so drifts of the machine weigh on all alike. The load average is printed before and
# after each table.
#
# --tuning adds, at the largest size and locally, the served time of instances with 1,
# 2 and 4 workers, with and without `message_queue_data: :off_heap` on the
# partitioner and workers, against the plain loop (interleaved the same way).
# The split section times the NIF split of 100k pids against Elixir's group_by/phash2.
#
# Benchee is unavailable (no hex.pm), and test/support is not compiled in :prod, so the
# receiver code lives here; the harness loads the receiver module's object code onto
# the peers it starts.

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

    # Takes whatever it gets, so that a baseline can copy a list into it.
    def sink do
      receive do
        _ -> sink()
      end
    end

    # The same, freeing each message before the next, so that copies into it do not
    # pile up in fresh memory.
    def collecting_sink do
      receive do
        _ ->
          :erlang.garbage_collect()
          collecting_sink()
      end
    end

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
  alias GuildKit.Fanout.Split

  @message :binary.copy(<<7>>, 200)

  def run(argv, receiver_beam) do
    {opts, _, _} =
      OptionParser.parse(argv,
        strict: [
          sizes: :string,
          rounds: :integer,
          modes: :string,
          placements: :string,
          tuning: :boolean,
          split: :boolean
        ]
      )

    modes = list(opts[:modes] || "default,pack,offload,offload_pack")
    placements = list(opts[:placements] || "local,peers")

    sizes =
      (opts[:sizes] || "10000,100000") |> String.split(",") |> Enum.map(&String.to_integer/1)

    rounds = opts[:rounds] || 7

    {:ok, _} = Application.ensure_all_started(:guild_kit)
    receiver = {Bench.Receiver, receiver_beam}

    peers =
      if :peers in placements, do: Harness.start_peers("guild_kit_bench", 2, receiver), else: []

    header(peers, rounds)

    for size <- sizes, placement <- placements do
      groups = receivers(size, placement, peers)
      pids = groups |> Enum.flat_map(fn {_node, _counter, pids} -> pids end) |> Enum.shuffle()
      sink = spawn(&Bench.Receiver.sink/0)
      runs = [:plain, :bare_send | modes]
      load_before = Harness.load()
      samples = measure(runs, pids, groups, rounds, sink)

      IO.puts(
        "\n### #{size} receivers, #{placement} (load average #{load_before} before, #{Harness.load()} after)\n"
      )

      IO.puts(
        "| mode | caller blocked (ms) | all served (ms) | served vs plain | blocked vs bare send/2 |"
      )

      IO.puts("|---|---|---|---|---|")

      for run <- runs do
        report(run, Map.fetch!(samples, run), samples.plain, samples.bare_send)
      end

      Process.exit(sink, :kill)
      stop_receivers(groups)
    end

    if opts[:tuning], do: tuning(Enum.max(sizes), rounds)
    if Keyword.get(opts, :split, true), do: split_bench(peers)
  end

  defp list(csv), do: csv |> String.split(",") |> Enum.map(&String.to_atom/1)

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
  defp measure(runs, pids, groups, rounds, sink) do
    samples =
      for round <- 0..rounds, run <- runs, do: {round, run, round_trip(run, pids, groups, sink)}

    samples
    |> Enum.reject(fn {round, _run, _sample} -> round == 0 end)
    |> Enum.group_by(fn {_round, run, _sample} -> run end, fn {_, _, sample} -> sample end)
  end

  # {blocked, served} in ms; served is nil for a baseline that serves nobody.
  defp round_trip(:bare_send, pids, _groups, sink) do
    :erlang.garbage_collect()
    start = System.monotonic_time()
    send(sink, {:list, pids})
    blocked = System.monotonic_time() - start
    Process.sleep(50)
    {to_ms(blocked), nil}
  end

  defp round_trip(run, pids, groups, _sink) do
    for {node, counter, group_pids} <- groups do
      :ok = :erpc.call(node, Bench.Receiver, :arm, [counter, length(group_pids)])
    end

    flush()
    # A collection now, so that the caller's own pending garbage (this loop's, and the
    # receiver list it just built) is not collected inside the measured call.
    :erlang.garbage_collect()
    start = System.monotonic_time()
    send_in(run, pids)
    blocked = System.monotonic_time() - start
    served = await_served(groups, start)
    # Let workers and the garbage collector settle before the next round.
    Process.sleep(200)
    {to_ms(blocked), to_ms(served)}
  end

  defp await_served(groups, start) do
    Enum.reduce(groups, 0, fn {node, _, _}, latest ->
      # Monotonic clocks differ between nodes, so the time is taken here, on arrival
      # of the notice (a few µs later for a local one, ~0.1 ms for a peer's).
      receive do
        {:all_served, ^node} -> max(latest, System.monotonic_time() - start)
      after
        60_000 -> raise "#{node}: not every receiver was served within 60 s"
      end
    end)
  end

  defp send_in(:plain, pids), do: Enum.each(pids, &send(&1, @message))
  defp send_in(:default, pids), do: Fanout.send(pids, @message)
  defp send_in(:pack, pids), do: Fanout.send(pids, @message, pack: :binary)
  defp send_in(:offload, pids), do: Fanout.send(pids, @message, offload: true)
  defp send_in(:offload_pack, pids), do: Fanout.send(pids, @message, offload: true, pack: :binary)
  defp send_in({:instance, name}, pids), do: Fanout.send(pids, @message, name: name)

  defp flush do
    receive do
      {:all_served, _} -> flush()
    after
      0 -> :ok
    end
  end

  # -- local delivery tuning -------------------------------------------------------

  # Served time of instances with 1, 2 and 4 workers, each with default or off-heap
  # message queues on its partitioner and workers, against the plain loop.
  defp tuning(size, rounds) do
    variants =
      for workers <- [1, 2, 4], queues <- [:on_heap, :off_heap] do
        name = Module.concat(Bench, "W#{workers}#{queues}")
        {:ok, _} = Fanout.start_link(name: name, workers: workers, senders: 1)
        set_queues(name, queues)
        {{:instance, name}, "#{workers} workers, #{queues} queues"}
      end

    [{_node, counter, pids}] = groups = receivers(size, :local, [])
    pids = Enum.shuffle(pids)
    runs = [:plain | Enum.map(variants, &elem(&1, 0))]
    load_before = Harness.load()
    samples = measure(runs, pids, groups, rounds, nil)

    IO.puts(
      "\n### Local delivery at #{size} receivers by worker count and queue kind " <>
        "(load average #{load_before} before, #{Harness.load()} after)\n"
    )

    IO.puts("| instance | all served (ms) | served vs plain |")
    IO.puts("|---|---|---|")
    plain = median(for {_, served} <- samples.plain, do: served)
    IO.puts("| plain loop | #{summary(for {_, s} <- samples.plain, do: s)} | 1.00x |")

    for {run, label} <- variants do
      served = for {_, s} <- Map.fetch!(samples, run), do: s
      IO.puts("| #{label} | #{summary(served)} | #{fmt(median(served) / plain)}x |")
    end

    _ = counter
    stop_receivers(groups)
  end

  # Sets the message queue kind of an instance's partitioners and workers, from inside
  # each process (a process can only set its own flags).
  defp set_queues(name, queues) do
    supervisor = GuildKit.Fanout.Runtime.supervisor_name(name)

    for pid <- descendants(Process.whereis(supervisor)), not sender?(pid) do
      :sys.replace_state(pid, fn state ->
        Process.flag(:message_queue_data, queues)
        state
      end)
    end
  end

  defp sender?(pid), do: match?({_, GuildKit.Fanout.Sender, _}, :proc_lib.initial_call(pid))

  defp descendants(supervisor) do
    Enum.flat_map(:supervisor.which_children(supervisor), fn
      {_id, pid, :supervisor, _} -> descendants(pid)
      {_id, pid, :worker, _} -> [pid]
    end)
  end

  # -- split -----------------------------------------------------------------------

  defp split_bench(peers) do
    workers = GuildKit.Fanout.Runtime.get().workers
    IO.puts("\n## Split of 100,000 pids into node groups and #{workers} worker buckets\n")

    IO.puts("""
    GuildKit: the NIF split (local pids into worker batches, remote pids set aside) plus
    the Elixir grouping of the remote pids by node (the NIF cannot read a remote pid's
    node). Elixir A: Enum.group_by/2 by node, then :erlang.phash2/2 buckets for this
    node's group only, i.e. the same output. Elixir B: the same, with buckets for every
    group. Median of 21 runs.

    | pids | GuildKit | Elixir A | Elixir B | speed-up vs A | vs B |
    |---|---|---|---|---|---|\
    """)

    {_counter, local} = Bench.Receiver.start(100_000, self())
    split_row("100k on this node", local, workers)

    if peers != [] do
      remote =
        Enum.flat_map(peers, fn node ->
          {_counter, pids} = :erpc.call(node, Bench.Receiver, :start, [33_000, self()])
          pids
        end)

      split_row("100k over 3 nodes", Enum.shuffle(Enum.take(local, 34_000) ++ remote), workers)
    end

    offload_floor(local)
  end

  defp split_row(label, pids, workers) do
    ours = fn ->
      {:ok, _batches, remote} = Split.split(pids, workers)
      take_all(remote)
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

  # The caller's part of `offload: true`, against the one copy of the list that
  # Manifold's offload makes: the check walk alone (one bucket, as in offload mode), one
  # `send/2` of the list to a process that collects it, and `length/1`, the least any
  # reading of the list costs. Warm and back to back, then cold: with the caches
  # evicted before each call, as the receivers' work between two fan-outs evicts them.
  defp offload_floor(pids) do
    sink = spawn(&Bench.Receiver.collecting_sink/0)
    walk = fn -> {:ok, _batches, nil} = Split.split(pids, 1) end
    bare_send = fn -> send(sink, {:list, pids}) end
    read = fn -> length(pids) end
    [walk_ms, send_ms, read_ms] = medians_ms([walk, bare_send, read], 21)
    [cold_walk, cold_send, cold_read] = medians_ms([walk, bare_send, read], 21, &evict_caches/0)
    Process.exit(sink, :kill)

    IO.puts("""

    Offload's caller work on 100k pids of this node (median of 21, back to back):

    | | check walk | one send/2 of the list | length/1 of the list |
    |---|---|---|---|
    | warm | #{fmt(walk_ms)} ms | #{fmt(send_ms)} ms | #{fmt(read_ms)} ms |
    | cold (caches evicted) | #{fmt(cold_walk)} ms | #{fmt(cold_send)} ms | #{fmt(cold_read)} ms |\
    """)
  end

  # Writes a word in every cache line of 32 MB, more than this machine's caches hold,
  # leaving no garbage on the heap for the timed call to collect.
  defp evict_caches do
    lines = :persistent_term.get({__MODULE__, :evict}, nil) || new_evict_buffer()
    for i <- 1..:atomics.info(lines).size//8, reduce: :ok, do: (_ -> :atomics.add(lines, i, 1))
  end

  defp new_evict_buffer do
    lines = :atomics.new(4_000_000, [])
    :persistent_term.put({__MODULE__, :evict}, lines)
    lines
  end

  defp take_all(nil), do: []

  defp take_all({list, _count}) do
    case GuildKit.Native.fanout_remote_take(list) do
      {pids, true} -> Split.group_by_node(pids)
      {pids, false} -> [Split.group_by_node(pids) | take_all({list, 0})]
    end
  end

  # Runs the functions in turns, each after a garbage collection and `before_each`, in
  # a fresh process whose heap is large enough that collections do not dominate either
  # side, and returns each one's median time.
  defp medians_ms(funs, runs, before_each \\ fn -> :ok end) do
    Harness.in_big_process(
      fn ->
        Enum.each(funs, & &1.())

        samples =
          for _ <- 1..runs do
            for fun <- funs do
              :erlang.garbage_collect()
              before_each.()
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
    config =
      GuildKit.Fanout.Runtime.get()
      |> Map.take([:senders, :partitioners, :workers])
      |> Map.update!(:senders, &tuple_size/1)
      |> Map.update!(:partitioners, &tuple_size/1)

    IO.puts("""
    # GuildKit.Fanout benchmark

    #{:erlang.system_info(:system_architecture)}, #{System.schedulers_online()} schedulers, \
    OTP #{:erlang.system_info(:otp_release)} (erts #{:erlang.system_info(:version)}), \
    Elixir #{System.version()}; peers: #{inspect(peers)}
    Config: #{inspect(config)}
    Median of #{rounds} rounds after one warm-up (min-max), each round running every mode
    once in turn; message: 200-byte binary; receivers only count. Served vs plain: ratio
    of the medians; bare send/2: one send of the whole list to another process.\
    """)
  end

  defp report(run, samples, plain, bare) do
    {blocked, served} = Enum.unzip(samples)
    {_, plain_served} = Enum.unzip(plain)
    {bare_blocked, _} = Enum.unzip(bare)

    served_cells =
      if run == :bare_send,
        do: "- | -",
        else: "#{summary(served)} | #{fmt(median(served) / median(plain_served))}x"

    IO.puts(
      "| #{run} | #{summary(blocked)} | #{served_cells} | " <>
        "#{fmt(median(blocked) / median(bare_blocked))}x |"
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

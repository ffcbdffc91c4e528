# Benchmarks GuildKit.Relay against a guild that sends every event itself with
# GuildKit.Fanout.send/3 to the list of its active sessions, in the same run. Run with:
#
#     MIX_ENV=prod mix run bench/relay.exs [--sizes 20000,200000] [--events 100]
#
# The guild is a process holding a million members (a map it never hands to a relay)
# and a relay handle. Its sessions are spread evenly over this node and two peers,
# 10% of them active; each holds 0-5 of 100 roles, and every event goes to the channel
# :general, whose overwrites name all 100 roles (each role is denied SEND_MESSAGES
# there, so every active session still sees it). For each size it measures:
#
#   * guild time per dispatch - the time of `Relay.dispatch/3` inside the guild, and of
#     `Fanout.send/3` of the list of active session pids for the baseline;
#   * delivery - for each event, the time until the last active session had it
#     (receivers record `:os.perf_counter/1` differences in an :atomics array of their
#     node), at 50 events a second;
#   * creation - `long_schedule` reports (5 ms, wall clock) of the guild while it
#     connects the sessions and starts the relays (at least 15,000 sessions per relay
#     node), and its stretches on a scheduler that used 5 ms of CPU (see `watch/1`);
#   * memory - heap plus native memory per session of one full relay of this node.
#
# test/support and examples/ are not compiled in :prod, so the receiver code lives
# here; the harness loads the receiver module's object code onto the peers it starts.

Code.require_file("support/harness.exs", __DIR__)

alias GuildKit.Bench.Harness
alias GuildKit.{Audience, Fanout, Permissions, Relay}

{:module, Bench.RelayReceiver, receiver_beam, _} =
  defmodule Bench.RelayReceiver do
    # A session records, for each event seq, the longest time any session of its node
    # took to get it.
    def start(count, slots) do
      latest = :atomics.new(slots, signed: false)
      pids = for _ <- 1..count, do: spawn(fn -> loop(latest, slots) end)
      {latest, pids}
    end

    def slowest(latest, slots, seqs),
      do: for(seq <- seqs, do: :atomics.get(latest, rem(seq, slots) + 1))

    def stop(pids), do: Enum.each(pids, &Process.exit(&1, :kill))

    defp loop(latest, slots) do
      receive do
        {:guild_event, _guild, _seq, {:stamp, seq, sent_at}} ->
          record(latest, slots, seq, sent_at)

        {:direct, seq, sent_at} ->
          record(latest, slots, seq, sent_at)

        _other ->
          :ok
      end

      loop(latest, slots)
    end

    defp record(latest, slots, seq, sent_at) do
      ns = max(:os.perf_counter(:nanosecond) - sent_at, 1)
      bump(latest, rem(seq, slots) + 1, ns)
    end

    defp bump(latest, index, ns) do
      current = :atomics.get(latest, index)

      if ns > current and :atomics.compare_exchange(latest, index, current, ns) != :ok,
        do: bump(latest, index, ns),
        else: :ok
    end
  end

defmodule Bench.RelayGuild do
  # The guild process: a million members, a relay handle, and the list of its active
  # sessions for the Fanout.send/3 baseline. Commands come as messages; it times its
  # own work.
  def start(perms) do
    parent = self()

    pid =
      :erlang.spawn_opt(
        fn ->
          members = Map.new(1..1_000_000, &{&1, %{name: "member #{&1}", roles: []}})
          relays = Relay.new(:bench_guild, permissions: perms)
          send(parent, {:ready, self()})
          loop(%{members: members, relays: relays, active: []})
        end,
        # Big enough that the million members never get collected during the run, as in
        # test/guild_kit/relay/cost_test.exs: the guild's own garbage collections are not
        # the relays' cost. 40M words was not: the garbage of 200,000 connects filled it,
        # and collecting the members took 384 ms (a `long_gc` report). The watch of the
        # connects reports any collection over 5 ms.
        min_heap_size: 100_000_000
      )

    receive do: ({:ready, ^pid} -> pid)
  end

  def call(guild, command) do
    send(guild, {:call, self(), command})
    receive do: ({:reply, ^guild, reply} -> reply)
  end

  defp loop(state) do
    receive do
      {:call, from, command} ->
        {reply, state} = handle(command, state)
        send(from, {:reply, self(), reply})
        loop(state)

      other ->
        case Relay.handle_info(other, state.relays) do
          {:ok, relays} -> loop(%{state | relays: relays})
          :ignore -> loop(state)
        end
    end
  end

  defp handle({:connect, sessions}, state) do
    {relays, active} =
      Enum.reduce(sessions, {state.relays, state.active}, fn {pid, id, roles, active?},
                                                             {relays, active} ->
        {:ok, relays} = Relay.connect(relays, pid, id, roles, active: active?)
        {relays, if(active?, do: [pid | active], else: active)}
      end)

    # The commands still queued go out now.
    {_seq, relays} = Relay.dispatch(relays, :connected, to: {:channel, :general})
    {:ok, %{state | relays: relays, active: active}}
  end

  defp handle({:relay, seq}, state) do
    t0 = :erlang.monotonic_time(:nanosecond)
    event = {:stamp, seq, :os.perf_counter(:nanosecond)}
    {_seq, relays} = Relay.dispatch(state.relays, event, to: {:channel, :general})
    {:erlang.monotonic_time(:nanosecond) - t0, %{state | relays: relays}}
  end

  defp handle({:direct, seq}, state) do
    t0 = :erlang.monotonic_time(:nanosecond)
    :ok = Fanout.send(state.active, {:direct, seq, :os.perf_counter(:nanosecond)})
    {:erlang.monotonic_time(:nanosecond) - t0, state}
  end

  defp handle(:stats, state), do: {Relay.stats(state.relays), state}
end

defmodule Bench.Relay do
  @slots 100_000
  @roles 100

  def run(args) do
    {opts, _, _} = OptionParser.parse(args, strict: [sizes: :string, events: :integer])

    sizes =
      (opts[:sizes] || "20000,200000") |> String.split(",") |> Enum.map(&String.to_integer/1)

    events = opts[:events] || 100
    # -connect_all false: the peers connect to this node only, not to each other.
    receiver = {Bench.RelayReceiver, Process.get(:receiver_beam)}

    peers =
      Harness.start_peers("guild_kit_relay_bench", 2, receiver, [~c"-connect_all", ~c"false"])

    nodes = [node() | peers]
    IO.puts("# GuildKit.Relay\n\n#{Harness.machine()} · #{load()}\n")

    perms = permissions()
    guild = Bench.RelayGuild.start(perms)
    :rand.seed(:exsss, {1, 2, 3})

    groups = Map.new(nodes, &{&1, []})

    {rows, _groups, _seq} =
      Enum.reduce(sizes, {[], groups, 0}, fn size, {rows, groups, seq} ->
        have = groups |> Map.values() |> Enum.map(&length/1) |> Enum.sum()
        {groups, creation} = grow(guild, groups, nodes, size - have)
        stats = Bench.RelayGuild.call(guild, :stats)

        IO.puts(
          "#{size} sessions: #{length(stats.relays)} relays, #{stats.active} active · #{load()}"
        )

        {relay, seq} = pace(guild, groups, :relay, seq, events)
        {direct, seq} = pace(guild, groups, :direct, seq, events)
        row = %{size: size, relay: relay, direct: direct, creation: creation}
        {rows ++ [row], groups, seq}
      end)

    report(rows)
    memory(guild)
  end

  # -- sessions --------------------------------------------------------------------

  defp grow(guild, groups, nodes, count) do
    per_node = div(count, length(nodes))

    new =
      Map.new(nodes, fn node ->
        {latest, pids} =
          :erpc.call(node, Bench.RelayReceiver, :start, [per_node, @slots], :infinity)

        {node, {latest, pids}}
      end)

    sessions =
      for {_node, {_latest, pids}} <- new, pid <- pids do
        {pid, :erlang.phash2(pid), Enum.take_random(1..@roles, :rand.uniform(6) - 1),
         :rand.uniform(10) == 1}
      end

    # The guild's connects, watched for long_schedule and for stretches of 5 ms of CPU.
    monitor = watch(guild)
    {us, :ok} = :timer.tc(fn -> Bench.RelayGuild.call(guild, {:connect, sessions}) end)
    seen = unwatch(monitor, guild)

    groups =
      Enum.reduce(new, groups, fn {node, {latest, pids}}, groups ->
        Map.update!(groups, node, &[{latest, pids} | &1])
      end)

    {groups, Map.merge(seen, %{sessions: length(sessions), us: us})}
  end

  # `long_schedule` measures wall time, and two peer VMs share these 2 cores with this
  # one, so it also reports a guild whose scheduler thread the OS preempted. As in
  # `make demo`, the guild is therefore also traced when it is scheduled in and out,
  # with the scheduler thread's CPU clock (`:cpu_timestamp`): a stretch on a normal
  # scheduler that used 5 ms of CPU is the guild holding it; a report without one is
  # preemption. A stretch includes the guild's garbage collections, which
  # `long_gc` reports apart.
  @dirty_exit {:erts_internal, :dirty_nif_finalizer, 1}

  defp watch(guild) do
    parent = self()

    pid =
      spawn(fn ->
        :erlang.system_monitor(self(), [{:long_schedule, 5}, {:long_gc, 5}])
        :erlang.trace(:all, true, [:cpu_timestamp])
        :erlang.trace(guild, true, [:running, :timestamp, {:tracer, self()}])
        send(parent, {:watching, self()})
        collect(guild, nil, %{reports: [], held: [], collections: []})
      end)

    receive do: ({:watching, ^pid} -> pid)
  end

  # `since`: where and at what CPU stamp the guild was last scheduled in.
  defp collect(guild, since, seen) do
    receive do
      {:monitor, ^guild, :long_schedule, info} ->
        collect(guild, since, %{seen | reports: [info[:timeout] | seen.reports]})

      {:monitor, ^guild, :long_gc, info} ->
        collect(guild, since, %{seen | collections: [info[:timeout] | seen.collections]})

      {:monitor, _other, _, _} ->
        collect(guild, since, seen)

      {:trace_ts, ^guild, :in, at_in, stamp} ->
        collect(guild, {at_in, stamp}, seen)

      {:trace_ts, ^guild, :out, at_out, stamp} ->
        seen =
          with {at_in, start} when at_out != @dirty_exit <- since,
               ms when ms >= 5 <- div(:timer.now_diff(stamp, start), 1000) do
            %{seen | held: [{ms, at_in, at_out} | seen.held]}
          else
            _ -> seen
          end

        collect(guild, nil, seen)

      {:stop, from} ->
        :erlang.trace(:all, false, [:cpu_timestamp])
        send(from, {:seen, Map.new(seen, fn {key, list} -> {key, Enum.reverse(list)} end)})
    end
  end

  defp unwatch(monitor, guild) do
    :erlang.system_monitor(:undefined)
    :erlang.trace(guild, false, [:running])
    # The guild's last trace messages reach the monitor before it is asked to stop.
    delivered = :erlang.trace_delivered(guild)
    receive do: ({:trace_delivered, ^guild, ^delivered} -> :ok)
    send(monitor, {:stop, self()})
    receive do: ({:seen, seen} -> seen)
  end

  # -- events ----------------------------------------------------------------------

  # `events` events at 50 a second; returns the guild's times and the deliveries.
  defp pace(guild, groups, kind, seq, events) do
    seqs = (seq + 1)..(seq + events)
    start = System.monotonic_time(:millisecond)

    times =
      for {s, i} <- Enum.with_index(seqs) do
        wait = start + i * 20 - System.monotonic_time(:millisecond)
        if wait > 0, do: Process.sleep(wait)
        Bench.RelayGuild.call(guild, {kind, s})
      end

    Process.sleep(1_000)

    delivery =
      for {node, tables} <- groups, {latest, _pids} <- tables do
        :erpc.call(node, Bench.RelayReceiver, :slowest, [latest, @slots, Enum.to_list(seqs)])
      end
      |> Enum.zip_with(&Enum.max/1)

    {%{
       guild: Harness.stats(times),
       delivery: Harness.stats(delivery),
       missing: Enum.count(delivery, &(&1 == 0))
     }, seq + events}
  end

  # -- figures ---------------------------------------------------------------------

  defp report(rows) do
    IO.puts("")

    Harness.table(
      [
        "sessions",
        "guild: relay dispatch (median / p99)",
        "guild: Fanout.send of active pids",
        "ratio",
        "delivery median / p99: relays",
        "delivery median / p99: direct",
        "connect: guild time; long_schedule ≥ 5 ms (wall clock); stretches of ≥ 5 ms CPU"
      ],
      for row <- rows do
        [
          row.size,
          "#{Harness.format_ns(row.relay.guild.median)} / #{Harness.format_ns(row.relay.guild.p99)}",
          "#{Harness.format_ns(row.direct.guild.median)} / #{Harness.format_ns(row.direct.guild.p99)}",
          "#{Float.round(row.direct.guild.median / row.relay.guild.median, 1)}×",
          delivery(row.relay),
          delivery(row.direct),
          "#{Float.round(row.creation.us / 1000, 1)} ms for #{row.creation.sessions}; " <>
            "#{length(row.creation.reports)}; #{inspect(Enum.map(row.creation.held, &elem(&1, 0)), charlists: :as_lists)}"
        ]
      end
    )

    # Where the guild was when it held a scheduler (scheduled in / out), for the reader;
    # and the guild's own collections, whose cost is its heap, not the relays'.
    for row <- rows, {ms, at_in, at_out} <- row.creation.held do
      IO.puts("held #{ms} ms of CPU at #{row.size}: in #{inspect(at_in)}, out #{inspect(at_out)}")
    end

    for row <- rows, ms <- row.creation.collections do
      IO.puts("a collection of the guild's heap took #{ms} ms at #{row.size}")
    end

    [a, b | _] = rows ++ rows

    IO.puts(
      "\nrelay dispatch median, #{b.size} vs #{a.size} sessions: #{Float.round(b.relay.guild.median / a.relay.guild.median, 2)}× · #{load()}"
    )
  end

  defp delivery(run) do
    "#{Harness.format_ns(run.delivery.median)} / #{Harness.format_ns(run.delivery.p99)}#{missing(run)}"
  end

  defp missing(%{missing: 0}), do: ""
  defp missing(%{missing: n}), do: " (#{n} events never complete)"

  # One relay of this node: its heap and its audience's native memory, per session.
  defp memory(guild) do
    stats = Bench.RelayGuild.call(guild, :stats)
    relay = Enum.find(stats.relays, &(node(&1) == node()))
    me = self()

    :sys.replace_state(relay, fn state ->
      send(me, {:native, Audience.memory(state.audience), Audience.size(state.audience)})
      state
    end)

    {native, sessions} = receive do: ({:native, native, sessions} -> {native, sessions})
    :erlang.garbage_collect(relay)
    {:memory, heap} = Process.info(relay, :memory)

    IO.puts(
      "relay memory: #{Float.round((heap + native) / sessions, 1)} bytes a session " <>
        "(#{sessions} sessions: heap #{heap} B, native #{native} B)"
    )
  end

  defp permissions do
    roles = Map.new(1..@roles, &{&1, 0})
    # Every role is named in :general: denied SEND_MESSAGES (0x800), VIEW_CHANNEL kept.
    overwrites = for r <- 1..@roles, do: {:role, r, 0, 0x800}

    Permissions.new(everyone: 0xC00, roles: roles)
    |> Permissions.put_channel(:general, overwrites)
  end

  defp load do
    {avg, 0} = System.cmd("cat", ["/proc/loadavg"])
    "load #{avg |> String.split() |> hd()}"
  end
end

Process.put(:receiver_beam, receiver_beam)
Bench.Relay.run(System.argv())

defmodule GuildKit.Examples.Demo do
  @moduledoc """
  Runs a simulated guild of a million members on GuildKit with relays (and, with
  `baseline: true`, the same guild with direct fan-out from the guild process and on
  plain OTP, in the same run) and reports what it does to the guild process.
  `mix guild_kit.demo` is the command-line front end.

  The members are generated once (`:members`; 5% with one of ten hoisted roles). The
  guild has twenty channels: ten everyone sees, and ten each seen only by one hoisted
  role. Then, for each toolkit:

    1. the members are loaded into a `GuildKit.Examples.Guild`;
    2. one `GuildKit.Examples.Session` per online user is started (`:sessions`, spread
       over `:nodes` peer nodes when given), a fraction of them active (`:active`),
       watching the top ten 100-row windows of the sidebar, the others passive;
    3. a steady stream of messages (to a random channel, a third of them mentioning
       online users), presence changes, role changes, joins and leaves is applied at
       `:rate` events per second for `:seconds` seconds, while the guild's memory is
       measured (every second with GuildKit, every 5 s on plain OTP, whose measurement
       holds the guild for the copy of its whole state) and normal-scheduler stalls
       are watched for (the guild's by the CPU time of its stretches on a scheduler,
       others' by `long_schedule`);
    4. the figures are collected, and the copies of the sidebar that active sessions
       kept from the ops are checked against the guild's.

  With relays, a message reaches only the sessions that may see its channel, and its
  mentions reach passive sessions too; passive sessions get passive updates. The two
  baselines send every event to every active session and nothing to passive ones.
  """

  alias GuildKit.Permissions
  alias GuildKit.Examples.{Guild, PeerNode, Session}
  alias GuildKit.Examples.Guild.OtpToolkit
  alias GuildKit.Examples.Demo.Report

  @defaults [
    members: 1_000_000,
    sessions: 200_000,
    active: 0.1,
    seconds: 15,
    rate: 10,
    nodes: 0,
    baseline: false,
    report: nil,
    seed: 42
  ]
  @roles for r <- 1..10, do: {:role, r}
  @public_channels for c <- 0..9, do: {:channel, c}
  @role_channels for r <- 1..10, do: {{:channel, 9 + r}, {:role, r}}
  @windows for w <- 0..9, do: {w * 100, w * 100 + 99}
  @stall_ms 5
  @tick_ms 20
  @slots 4_000_000
  @starters 4

  @doc "The default options."
  @spec defaults() :: keyword()
  def defaults, do: @defaults

  @doc "Runs the demo with `opts` (see `defaults/0`), prints the report and returns the results."
  @spec run(keyword()) :: [map()]
  def run(opts \\ []) do
    opts = Keyword.merge(@defaults, opts)
    started = System.monotonic_time(:millisecond)
    Process.put(:demo_started, started)
    _ = :rand.seed(:exsss, {opts[:seed], 11, 23})

    peers = start_peers(opts[:nodes])
    toolkits = if opts[:baseline], do: [:relay, :guild_kit, :otp], else: [:relay]
    say("generating #{opts[:members]} members (#{opts[:sessions]} online)")
    members = generate_members(opts[:members], opts[:sessions])
    results = Enum.map(toolkits, &run_guild(&1, members, opts, peers))
    Enum.each(peers, &PeerNode.stop/1)

    IO.puts(Report.text(results, opts))

    if path = opts[:report] do
      File.write!(path, Report.html(results, opts))
      say("wrote #{path}")
    end

    say("done in #{div(System.monotonic_time(:millisecond) - started, 1000)} s")
    results
  end

  ## One guild

  defp run_guild(toolkit, members, opts, peers) do
    label = label(toolkit)
    timings = :atomics.new(@slots, signed: false)
    work = :counters.new(1, [])

    say("#{label}: loading them into the guild")

    {load_us, {:ok, guild}} =
      :timer.tc(fn ->
        Guild.start_link(
          toolkit: toolkit,
          hoisted_roles: @roles,
          members: members,
          timings: timings,
          work: work,
          permissions: permissions()
        )
      end)

    say(
      "#{label}: loaded in #{ms(load_us)}; connecting #{opts[:sessions]} sessions, #{active_count(opts)} active"
    )

    sessions = start_sessions(guild, opts, peers)
    # A compact heap before the run, as a long-lived guild's would be.
    :erlang.garbage_collect(guild)

    say("#{label}: running #{opts[:rate]} events/s for #{opts[:seconds]} s")
    monitor = start_stall_monitor(guild)
    run = drive(guild, members, opts, memory_interval(toolkit))
    stalls = stop_stall_monitor(monitor, guild)
    drained = drain(sessions, run.last_seq)

    say("#{label}: measuring the guild's memory")
    memory = measure_memory(guild, toolkit)
    checked = check_replicas(guild, sessions)
    delivery = delivery_times(sessions, run.last_seq)
    passive = passive_counts(sessions)
    stop_sessions(sessions)
    GenServer.stop(guild)

    %{
      toolkit: toolkit,
      label: label,
      load_us: load_us,
      updates: read_timings(timings, run.last_seq),
      events: run.last_seq,
      seconds: run.seconds,
      # The guild's own time applying events (not its waits in the run queue behind
      # the sessions it feeds).
      busy_seconds: :counters.get(work, 1) / 1.0e6,
      delivery: delivery,
      drained: drained,
      memory: memory,
      memory_during_run: run.memory_us,
      memory_interval_s: div(memory_interval(toolkit), 1_000_000),
      stalls: stalls,
      checked: checked,
      passive: passive
    }
  end

  defp label(:relay), do: "GuildKit relays"
  defp label(:guild_kit), do: "GuildKit direct"
  defp label(:otp), do: "plain OTP"

  # Ten channels everyone sees; ten more, each only for one hoisted role.
  defp permissions do
    perms =
      Permissions.new(everyone: Permissions.view_channel(), roles: Map.new(@roles, &{&1, 0}))

    perms = Enum.reduce(@public_channels, perms, &Permissions.put_channel(&2, &1, []))

    Enum.reduce(@role_channels, perms, fn {channel, role}, perms ->
      Permissions.put_channel(perms, channel, [
        {:everyone, 0, Permissions.view_channel()},
        {:role, role, Permissions.view_channel(), 0}
      ])
    end)
  end

  ## Members

  # The first `online` users are online; 5% of users carry a hoisted role. They are
  # listed in sidebar order (online members of each hoisted role, the other online
  # members, the offline ones; by name), as a database query sorted that way returns
  # them: sorted once here, they load faster into each guild.
  defp generate_members(count, online) do
    for id <- 1..count do
      roles = if :rand.uniform(20) == 1, do: [Enum.random(@roles)], else: []
      status = if id <= online, do: :online, else: :offline
      member = %{name: name(), roles: roles, status: status}
      {group_index(member), member.name, user_id(id), member}
    end
    |> :lists.sort()
    |> Enum.map(fn {_group, _name, id, member} -> {id, member} end)
  end

  defp group_index(%{status: :offline}), do: length(@roles) + 1
  defp group_index(%{roles: [{:role, r} | _]}), do: r - 1
  defp group_index(%{roles: []}), do: length(@roles)

  defp user_id(n), do: 100_000_000_000_000_000 + n * 7_919

  @syllables ~w(ka ri to mi na so ha lu en do ra vi ze mo qu ty ar el is on)
  defp name, do: for(_ <- 1..(2 + :rand.uniform(3)), into: "", do: Enum.random(@syllables))

  ## Sessions

  defp active_count(opts), do: round(opts[:sessions] * opts[:active])

  # Sessions of users 1..sessions; the first `active` of them watch a top window.
  defp start_sessions(guild, opts, peers) do
    nodes = if peers == [], do: [node()], else: Enum.map(peers, & &1.node)
    active = active_count(opts)

    specs =
      for n <- 1..opts[:sessions] do
        {user_id(n), if(n <= active, do: Enum.at(@windows, rem(n, length(@windows))))}
      end

    chunks = Enum.chunk_every(specs, div(length(specs) + length(nodes) - 1, length(nodes)))

    nodes
    |> Enum.zip(chunks)
    |> Enum.map(fn {node, chunk} ->
      :erpc.call(node, __MODULE__, :start_local_sessions, [guild, chunk], :infinity)
    end)
  end

  @doc false
  # Runs on each node: starts its sessions with a statistics table of that node.
  def start_local_sessions(guild, specs) do
    stats = Session.Stats.new(@slots)

    # A few starters, each starting its share of the sessions one after another, keep the
    # guild's queue of connects fed without a process per session to start them.
    sessions =
      specs
      |> Enum.chunk_every(max(div(length(specs) + @starters - 1, @starters), 1))
      |> Enum.map(fn chunk ->
        Task.async(fn -> Enum.map(chunk, &start_session(guild, stats, &1)) end)
      end)
      |> Task.await_many(:infinity)
      |> Enum.concat()

    %{node: node(), stats: stats, sessions: sessions}
  end

  defp start_session(guild, stats, {user_id, window}) do
    {:ok, pid} = Session.start(guild, user_id, watch: window, stats: stats)
    {pid, window}
  end

  defp stop_sessions(groups) do
    for %{node: node, sessions: sessions} <- groups do
      :erpc.call(
        node,
        Enum,
        :each,
        [Enum.map(sessions, &elem(&1, 0)), &Process.exit(&1, :kill)],
        :infinity
      )
    end

    :ok
  end

  ## The event stream

  # Applies events at the configured rate, in ticks. A guild slower than the rate makes
  # the driver fall behind (each batch waits for the guild) rather than queue events.
  defp drive(guild, members, opts, memory_interval) do
    model = %{
      ids: members |> Enum.map(&elem(&1, 0)) |> List.to_tuple(),
      status: Map.new(members, fn {id, m} -> {id, m.status} end),
      next_id: length(members) + 1,
      online: opts[:sessions] |> max(1),
      left: MapSet.new()
    }

    start = System.monotonic_time(:microsecond)
    deadline = start + opts[:seconds] * 1_000_000

    loop(guild, model, %{
      rate: opts[:rate],
      start: start,
      deadline: deadline,
      sent: 0,
      memory: [],
      memory_interval: memory_interval,
      next_report: start
    })
  end

  defp loop(guild, model, run) do
    now = System.monotonic_time(:microsecond)

    cond do
      now >= run.deadline ->
        # A last event that every active session gets, to know when all arrived.
        {event, _model} = presence_event(model)
        :ok = Guild.apply_events(guild, [event])

        %{
          last_seq: run.sent + 1,
          seconds: (now - run.start) / 1.0e6,
          memory_us: run.memory
        }

      now >= run.next_report ->
        {us, result} = :timer.tc(fn -> Guild.memory(guild, timeout: 5_000) end)
        bytes = with {:ok, b} <- result, do: b
        elapsed = (now - run.start) / 1.0e6

        say(
          "  #{Float.round(elapsed, 1)} s: #{run.sent} events, #{round(run.sent / max(elapsed, 0.001))}/s, state ~#{mb(bytes)} (measured in #{ms(us)})"
        )

        loop(guild, model, %{
          run
          | memory: [us | run.memory],
            next_report: run.next_report + run.memory_interval
        })

      true ->
        # At most one tick's worth per call, so that a guild slower than the rate keeps
        # the driver checking its deadline.
        due =
          min(
            trunc((now - run.start) / 1.0e6 * run.rate) - run.sent,
            max(div(run.rate * @tick_ms, 1000), 1)
          )

        if due > 0 do
          {events, model} = Enum.map_reduce(1..due, model, fn _, m -> next_event(m) end)
          :ok = Guild.apply_events(guild, events)
          loop(guild, model, %{run | sent: run.sent + due})
        else
          Process.sleep(@tick_ms)
          loop(guild, model, run)
        end
    end
  end

  # 40% messages, 40% presence changes, 10% role changes, 5% joins, 5% leaves.
  defp next_event(model) do
    case :rand.uniform(20) do
      n when n <= 8 ->
        channel = {:channel, :rand.uniform(20) - 1}
        mentions = if :rand.uniform(3) == 1, do: [user_id(:rand.uniform(model.online))], else: []
        {{:message, random_member(model), channel, mentions}, model}

      n when n <= 16 ->
        presence_event(model)

      n when n <= 18 ->
        id = random_member(model)
        {{:roles, id, Enum.take_random(@roles, :rand.uniform(2) - 1)}, model}

      19 ->
        id = user_id(model.next_id)
        event = {:join, id, name(), []}

        {event,
         %{model | next_id: model.next_id + 1, status: Map.put(model.status, id, :offline)}}

      20 ->
        id = random_member(model)

        {{:leave, id},
         %{model | left: MapSet.put(model.left, id), status: Map.delete(model.status, id)}}
    end
  end

  defp presence_event(model) do
    id = random_member(model)
    status = if model.status[id] == :online, do: :offline, else: :online
    {{:presence, id, status}, put_in(model.status[id], status)}
  end

  # A present member of the initial population (joiners are left alone).
  defp random_member(model) do
    id = elem(model.ids, :rand.uniform(tuple_size(model.ids)) - 1)
    if MapSet.member?(model.left, id), do: random_member(model), else: id
  end

  # The GuildKit guilds estimate their state each second, in a few ms. The plain-OTP guild
  # is held for the whole copy and `flat_size` of its state (about a second at a million
  # members), so it is measured every 5 s, which the report says.
  defp memory_interval(:otp), do: 5_000_000
  defp memory_interval(_toolkit), do: 1_000_000

  ## Figures

  defp read_timings(timings, last_seq) do
    for seq <- 1..max(last_seq, 1),
        ns = :atomics.get(timings, rem(seq, @slots) + 1),
        ns > 0,
        do: ns
  end

  # Waits until every active session has the last event (its ops and events before it
  # included), 60 s at most; true when all have. The figures and the sidebar check are
  # read after it, so none is taken while deliveries are still queued.
  defp drain(groups, last_seq) do
    deadline = System.monotonic_time(:millisecond) + 60_000

    Enum.all?(groups, fn %{node: node, sessions: sessions} ->
      :erpc.call(node, __MODULE__, :await_last_event, [sessions, last_seq, deadline], :infinity)
    end)
  end

  @doc false
  # Runs on each node: true when each of its active sessions reports `last_seq` before
  # `deadline` (a monotonic time in ms).
  def await_last_event(sessions, last_seq, deadline) do
    Enum.all?(sessions, fn
      {_pid, nil} -> true
      {pid, _window} -> has_event?(pid, last_seq, deadline)
    end)
  end

  defp has_event?(pid, last_seq, deadline) do
    cond do
      Session.report(pid).last_seq == last_seq ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        false

      true ->
        Process.sleep(20)
        has_event?(pid, last_seq, deadline)
    end
  end

  defp delivery_times(groups, last_seq) do
    groups |> slowest_per_event(1..max(last_seq, 1)) |> Enum.sort() |> Enum.map(&elem(&1, 1))
  end

  # For each event, the longest any active session took to receive it, over all nodes.
  defp slowest_per_event(groups, seqs) do
    groups
    |> Enum.flat_map(fn %{node: node, stats: stats} ->
      :erpc.call(node, Session.Stats, :slowest, [stats, seqs], :infinity)
    end)
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Enum.map(fn {seq, times} -> {seq, Enum.max(times)} end)
  end

  # What passive sessions got, over all nodes: passive updates and mentions.
  defp passive_counts(groups) do
    groups
    |> Enum.map(fn %{node: node, stats: stats} ->
      :erpc.call(node, Session.Stats, :counts, [stats])
    end)
    |> Enum.reduce(
      %{passive_updates: 0, mentions: 0},
      &Map.merge(&1, &2, fn _, a, b -> a + b end)
    )
  end

  defp measure_memory(guild, toolkit) when toolkit in [:relay, :guild_kit] do
    {estimate_us, {:ok, estimate}} = :timer.tc(fn -> Guild.memory(guild) end)
    {exact_us, {:ok, exact}} = :timer.tc(fn -> exact_bytes(guild) end)
    %{estimate: estimate, estimate_us: estimate_us, exact: exact, exact_us: exact_us}
  end

  defp measure_memory(guild, :otp) do
    {exact_us, {:ok, exact}} = :timer.tc(fn -> Guild.memory(guild) end)
    %{estimate: nil, estimate_us: nil, exact: exact, exact_us: exact_us}
  end

  # The exact size the way an OTP-only guild gets it: copy the state out, size the copy.
  defp exact_bytes(guild), do: OtpToolkit.memory(guild, [])

  # The sidebar copies that active sessions built from the ops must equal the guild's
  # rows. A sample of 100 sessions is checked.
  defp check_replicas(guild, groups) do
    active =
      for %{sessions: sessions} <- groups, {pid, window} <- sessions, window, do: {pid, window}

    sample = Enum.take_random(active, 100)

    matching =
      Enum.count(sample, fn {pid, {first, last}} ->
        Session.report(pid).rows == Guild.rows(guild, first, last)
      end)

    {matching, length(sample)}
  end

  ## Stalls

  # `long_schedule` measures wall time: on 2 cores shared with the sessions, the peer
  # nodes' VMs and the OS, it also reports a guild whose scheduler thread the OS
  # preempted. The guild's stalls are therefore its stretches on a normal scheduler that
  # used @stall_ms of CPU or more, by the scheduler thread's CPU clock (`:cpu_timestamp`
  # on a `:running` trace): a process that holds a scheduler burns that CPU, a preempted
  # one does not. Other processes' stalls are the monitor's wall-clock reports.
  @dirty_exit {:erts_internal, :dirty_nif_finalizer, 1}

  defp start_stall_monitor(guild) do
    parent = self()

    pid =
      spawn_link(fn ->
        :erlang.trace(:all, true, [:cpu_timestamp])
        :erlang.trace(guild, true, [:running, :timestamp, {:tracer, self()}])
        send(parent, {:monitoring, self()})
        stall_loop(parent, guild, nil, [])
      end)

    receive do: ({:monitoring, ^pid} -> :ok)
    _ = :erlang.system_monitor(pid, [{:long_schedule, @stall_ms}])
    pid
  end

  # `since`: the CPU stamp of the guild's last schedule-in on a normal scheduler.
  defp stall_loop(parent, guild, since, seen) do
    receive do
      {:monitor, ^guild, :long_schedule, _info} ->
        stall_loop(parent, guild, since, seen)

      {:monitor, pid, :long_schedule, info} ->
        stall_loop(parent, guild, since, [{pid, info[:timeout]} | seen])

      {:trace_ts, ^guild, :in, _mfa, stamp} ->
        stall_loop(parent, guild, stamp, seen)

      {:trace_ts, ^guild, :out, mfa, stamp} when since != nil and mfa != @dirty_exit ->
        ms = div(:timer.now_diff(stamp, since), 1000)
        seen = if ms >= @stall_ms, do: [{guild, ms} | seen], else: seen
        stall_loop(parent, guild, nil, seen)

      {:stop, ^parent} ->
        :erlang.trace(:all, false, [:cpu_timestamp])
        send(parent, {:stalls, Enum.reverse(seen)})

      _other ->
        stall_loop(parent, guild, nil, seen)
    end
  end

  defp stop_stall_monitor(monitor, guild) do
    _ = :erlang.system_monitor(:undefined)
    _ = :erlang.trace(guild, false, [:running])
    # The guild's last trace messages reach the monitor before it is asked to stop.
    delivered = :erlang.trace_delivered(guild)
    receive do: ({:trace_delivered, ^guild, ^delivered} -> :ok)
    send(monitor, {:stop, self()})

    receive do
      {:stalls, stalls} ->
        %{
          guild: for({^guild, ms} <- stalls, do: ms),
          other: for({pid, ms} <- stalls, pid != guild, do: {describe(pid), ms})
        }
    end
  end

  # What a stalled process was, for the report: its registered name or initial call.
  defp describe(pid) when pid == self(), do: "the demo's driver (sizing the state)"
  defp describe(port) when is_port(port), do: "a port (#{port |> Port.info(:name) |> elem(1)})"

  # A report names the process, not what it was doing: a session or a relay is named by
  # the module it runs, whenever it was held (the start-up is only where it began).
  defp describe(pid) do
    case Process.info(pid, [:registered_name, :dictionary]) do
      [registered_name: name, dictionary: _] when is_atom(name) and name != [] -> inspect(name)
      [registered_name: _, dictionary: dictionary] -> kind(dictionary[:"$initial_call"], pid)
      nil -> "an exited process"
    end
  end

  defp kind({Session, :init, 1}, _pid), do: "session processes"
  defp kind({GuildKit.Relay.Server, :init, 1}, _pid), do: "relays"
  defp kind({GuildKit.Fanout.Worker, :init, 1}, _pid), do: "Fanout workers"
  defp kind(initial_call, pid), do: inspect(initial_call || pid)

  ## Peers

  defp start_peers(0), do: []

  defp start_peers(count) do
    say("starting #{count} peer nodes")
    PeerNode.start_many(count)
  end

  ## Output

  @doc false
  def say(message) do
    elapsed =
      System.monotonic_time(:millisecond) -
        (Process.get(:demo_started) || System.monotonic_time(:millisecond))

    {cpu, _} = :erlang.statistics(:runtime)

    IO.puts(
      :stderr,
      "[#{seconds(elapsed)} s, cpu #{seconds(cpu)} s] " <> message
    )
  end

  defp seconds(ms), do: String.pad_leading(Float.to_string(Float.round(ms / 1000, 1)), 6)
  defp ms(us), do: "#{Float.round(us / 1000, 2)} ms"
  defp mb(bytes) when is_integer(bytes), do: "#{Float.round(bytes / 1_048_576, 1)} MB"
  defp mb(other), do: inspect(other)
end

defmodule GuildKit.Relay.ModelTest do
  @moduledoc """
  Random runs of a relay guild with sessions on this node and on two peers, compared
  with `GuildKit.Test.RelayModel`: connects, disconnects, activity switches, role and
  permission changes, events (to all, to channels, with required bits, with mentions)
  and member-list changes, with a relay killed and a peer stopped in the middle.
  """
  use ExUnit.Case, async: false

  alias GuildKit.Examples.PeerNode
  alias GuildKit.Relay
  alias GuildKit.Test.{Receivers, RelayGuild, RelayModel}

  @moduletag :slow
  @moduletag timeout: 600_000

  @interval 40
  @per_node 16
  @members for m <- 1..20, do: {:member, m}
  @roles [:a, :b, :c, :d, :e, :f]
  @channels [:general, :staff, :secret, :news]
  @windows [{0, 9}, {10, 19}, {0, 99}, {5, 5}]
  @steps 360

  setup_all do
    steady = PeerNode.start()
    on_exit(fn -> PeerNode.stop(steady) end)
    %{steady: steady}
  end

  for seed <- [101, 202, 303] do
    test "seed #{seed}: every session gets what the model says", %{steady: steady} do
      run(unquote(seed), steady)
    end
  end

  defp run(seed, steady) do
    IO.puts("relay model seed: #{seed}")
    :rand.seed(:exsss, {seed, seed, seed})
    doomed = PeerNode.start()
    nodes = [node(), steady.node, doomed.node]

    sessions =
      Map.new(nodes, fn n ->
        {_group, pids} =
          if n == node(),
            do: Receivers.start(@per_node),
            else: PeerNode.call(n, Receivers, :start, [@per_node])

        {n, pids}
      end)

    options = random_permissions()
    perms = GuildKit.Permissions.new(options)

    {:ok, guild} =
      RelayGuild.start(:model_guild,
        max_sessions: 5,
        passive_interval: @interval,
        permissions: perms
      )

    started = System.monotonic_time(:millisecond)

    state = %{
      model: RelayModel.new(:model_guild, options),
      guild: guild,
      options: options,
      all: sessions |> Map.values() |> List.flatten(),
      gone: MapSet.new()
    }

    state =
      Enum.reduce(1..@steps, state, fn step, state ->
        state =
          cond do
            step == div(@steps, 3) -> kill_relay(state)
            step == div(@steps * 2, 3) -> stop_peer(state, doomed, sessions[doomed.node])
            true -> random_op(state)
          end

        if :rand.uniform(8) == 1, do: Process.sleep(:rand.uniform(@interval))
        state
      end)

    # Every relay ticks at least twice more; then the check runs until what is on its way
    # has come (for up to 10 s): a missing message fails it for good only after that, and
    # an extra one never goes away.
    Process.sleep(@interval * 4)
    live = Enum.reject(state.all, &(node(&1) == doomed.node))

    {received, problems} =
      until_clean(50, fn ->
        elapsed = System.monotonic_time(:millisecond) - started
        received = Map.merge(state[:doomed_received] || %{}, Map.new(Receivers.messages(live)))

        problems =
          RelayModel.check(state.model, received, interval_ms: @interval, elapsed_ms: elapsed)

        {received, problems}
      end)

    stats = RelayGuild.run(guild, &{Relay.stats(&1), &1})
    refute Map.has_key?(stats.nodes, doomed.node)
    GenServer.stop(guild)
    for pid <- live, do: Process.exit(pid, :kill)

    assert problems == [], "seed #{seed}:\n" <> Enum.join(Enum.take(problems, 10), "\n")

    # The run exercised what it should.
    counts = Enum.frequencies_by(List.flatten(Map.values(received)), &elem(&1, 0))
    assert counts[:guild_event] > 100
    assert counts[:member_list_ops] > 20
    assert counts[:member_list_sync] > 5
    assert counts[:passive_update] > 5
    assert counts[:guild_relay_down] >= 1
  end

  ## Operations

  defp random_op(state) do
    connected = Map.keys(state.model.sessions)
    free = Enum.reject(state.all, &(&1 in connected or MapSet.member?(state.gone, &1)))

    op =
      case :rand.uniform(100) do
        n when n <= 20 and free != [] ->
          {:connect, Enum.random(free), Enum.random(@members), random_roles(), bool(),
           random_windows(), bool()}

        n when n <= 25 and connected != [] ->
          {:disconnect, Enum.random(connected)}

        n when n <= 42 and connected != [] ->
          watch = if bool(), do: random_windows()
          {:set_active, Enum.random(connected), bool(), watch, watch != nil and bool()}

        n when n <= 50 ->
          {:update_member, Enum.random(@members), random_roles()}

        n when n <= 53 ->
          {:put_permissions, random_permissions()}

        n when n <= 87 ->
          {:dispatch, {:event, :rand.uniform(1_000_000)}, random_filter(state), mentions()}

        _ ->
          {:dispatch_ops,
           for(
             w <- Enum.take_random(@windows, :rand.uniform(3)),
             do: {w, [{:delete, elem(w, 0)}, {:touch, :rand.uniform(100)}]}
           )}
      end

    apply_op(state, op)
  end

  defp apply_op(state, op) do
    :ok = RelayGuild.run(state.guild, fn relays -> {:ok, in_guild(relays, op)} end)
    options = if match?({:put_permissions, _}, op), do: elem(op, 1), else: state.options
    %{state | model: RelayModel.apply_op(state.model, op), options: options}
  end

  defp in_guild(relays, {:connect, pid, member, roles, active, watch, rows?}) do
    opts = [active: active, watch: watch] ++ if(rows?, do: [rows: &RelayModel.rows/1], else: [])
    {:ok, relays} = Relay.connect(relays, pid, member, roles, opts)
    relays
  end

  defp in_guild(relays, {:disconnect, pid}) do
    {:ok, relays} = Relay.disconnect(relays, pid)
    relays
  end

  defp in_guild(relays, {:set_active, pid, active, watch, rows?}) do
    opts =
      if(watch, do: [watch: watch], else: []) ++
        if(rows?, do: [rows: &RelayModel.rows/1], else: [])

    {:ok, relays} = Relay.set_active(relays, pid, active, opts)
    relays
  end

  defp in_guild(relays, {:update_member, member, roles}) do
    {:ok, relays} = Relay.update_member(relays, member, roles)
    relays
  end

  defp in_guild(relays, {:put_permissions, options}) do
    {:ok, relays} = Relay.put_permissions(relays, GuildKit.Permissions.new(options))
    relays
  end

  defp in_guild(relays, {:dispatch, event, to, mentions}) do
    {_seq, relays} = Relay.dispatch(relays, event, to: to, mentions: mentions)
    relays
  end

  defp in_guild(relays, {:dispatch_ops, changes}) do
    {_seq, relays} = Relay.dispatch_ops(relays, changes)
    relays
  end

  # Runs `check` (returning `{result, problems}`) every 200 ms until it finds no
  # problem, `tries` times at most, and returns its last result.
  defp until_clean(tries, check) do
    case check.() do
      {_result, problems} = last when problems == [] or tries <= 1 ->
        last

      _problems ->
        Process.sleep(200)
        until_clean(tries - 1, check)
    end
  end

  ## Faults

  # Kills a relay that has sessions; its sessions are told, and the model forgets them.
  defp kill_relay(state) do
    stats = RelayGuild.run(state.guild, &{Relay.stats(&1), &1})
    victim = Enum.random(stats.relays)
    Process.exit(victim, :kill)

    RelayGuild.wait_until(fn ->
      victim not in RelayGuild.run(state.guild, &{Relay.stats(&1).relays, &1})
    end)

    sessions = RelayGuild.run(state.guild, &{Relay.stats(&1).sessions, &1})
    lost(state, state.all -- MapSet.to_list(state.gone), stats.sessions - sessions)
  end

  # Stops the doomed peer, after reading what its sessions got so far.
  defp stop_peer(state, doomed, pids) do
    # Whatever is on its way to them is let in first, then read: a prefix of the model's.
    Process.sleep(100)
    received = Map.new(Receivers.messages(pids))
    PeerNode.stop(doomed)
    node = doomed.node

    RelayGuild.wait_until(fn ->
      not Map.has_key?(RelayGuild.run(state.guild, &{Relay.stats(&1).nodes, &1}), node)
    end)

    # A dispatch never blocks on the lost node (which would take seconds: a connect
    # attempt or a net tick).
    state = %{state | model: RelayModel.apply_op(state.model, {:lost, pids})}
    {us, state} = :timer.tc(fn -> apply_op(state, {:dispatch, :after_the_peer, :all, []}) end)
    assert us < 1_000_000

    state
    |> Map.put(:gone, MapSet.union(state.gone, MapSet.new(pids)))
    |> Map.put(:doomed_received, received)
  end

  # The `count` sessions that the guild dropped with their relay are told so, with
  # :guild_relay_down (through fan-out, so perhaps a little later): once that many have
  # it, the model forgets them. So are the sessions that left the relay before it
  # confirmed their disconnect, which it may have died owing events; stats do not count
  # those, so they are given the time `Receivers.await/2` gives stragglers (the guild
  # sends all of them in the same `Fanout.send/3`).
  defp lost(state, candidates, count) do
    told = fn ->
      for {pid, messages} <- Receivers.messages(candidates),
          {:guild_relay_down, :model_guild} in messages,
          do: pid
    end

    RelayGuild.wait_until(fn -> length(told.()) >= count end)
    Process.sleep(100)
    lost = told.()

    %{
      state
      | model: RelayModel.apply_op(state.model, {:lost, lost}),
        gone: MapSet.union(state.gone, MapSet.new(lost))
    }
  end

  ## Generators

  defp bool, do: :rand.uniform(2) == 1
  defp random_roles, do: Enum.take_random(@roles, :rand.uniform(4) - 1)
  defp random_windows, do: Enum.take_random(@windows, :rand.uniform(3) - 1)

  defp mentions,
    do: if(:rand.uniform(3) == 1, do: Enum.take_random(@members, :rand.uniform(3)), else: [])

  defp random_filter(state) do
    channels = Map.keys(state.options[:channels])

    case :rand.uniform(4) do
      1 -> :all
      _ when channels == [] -> :all
      2 -> {:channel, Enum.random(channels)}
      3 -> {:channel, Enum.random(channels), Enum.random([0x400, 0x800, 0xC00])}
      4 -> {:channel, Enum.random(channels)}
    end
  end

  defp random_permissions do
    roles =
      Map.new(Enum.take_random(@roles, 4), &{&1, Enum.random([0, 0x400, 0x800, 0xC00, 0x8])})

    channels =
      Map.new(Enum.take_random(@channels, 2 + :rand.uniform(2)), fn c ->
        overwrites =
          for _ <- 1..:rand.uniform(3) do
            case :rand.uniform(3) do
              1 ->
                {:everyone, Enum.random([0, 0x800]), Enum.random([0, 0x400])}

              2 ->
                {:role, Enum.random(@roles), Enum.random([0, 0x400, 0x800]),
                 Enum.random([0, 0x400])}

              3 ->
                {:member, Enum.random(@members), Enum.random([0, 0x400]), Enum.random([0, 0x800])}
            end
          end

        {c, overwrites}
      end)

    [
      everyone: Enum.random([0, 0x400, 0xC00]),
      roles: roles,
      owner: Enum.random([nil, {:member, 1}]),
      channels: channels
    ]
  end
end

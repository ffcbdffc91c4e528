defmodule GuildKit.Relay.FaultsTest do
  # What a guild sees when a relay crashes, when its sessions exit, and when it exits
  # itself. (A node going down is in model_test.exs, with a peer stopped mid-run.)
  use ExUnit.Case, async: false

  alias GuildKit.{Permissions, Relay}
  alias GuildKit.Test.{Receivers, RelayGuild}

  @guild :faulty_guild

  defp stats(guild), do: RelayGuild.run(guild, &{Relay.stats(&1), &1})

  defp run!(guild, fun) do
    :ok = RelayGuild.run(guild, fn relays -> {:ok, fun.(relays)} end)
  end

  defp connect_all(guild, pids, opts) do
    run!(guild, fn relays ->
      Enum.reduce(pids, relays, fn pid, relays ->
        {:ok, relays} = Relay.connect(relays, pid, {:member, :erlang.pid_to_list(pid)}, [], opts)
        relays
      end)
    end)
  end

  defp dispatch(guild, event, opts \\ []) do
    RelayGuild.run(guild, &Relay.dispatch(&1, event, opts))
  end

  test "a crashed relay's sessions are told and removed; its restart is taken back" do
    perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:general, [])
    {:ok, guild} = RelayGuild.start(@guild, max_sessions: 3, permissions: perms)
    {group, pids} = Receivers.start(6)
    connect_all(guild, pids, active: true)
    1 = dispatch(guild, :before)
    %{relays: [first, second]} = stats(guild)
    # What a relay has not handled when it is killed is lost with it: the test kills it
    # once every session has the first event.
    _ = Receivers.await(group, 6)

    # New permissions: only :mods may see :general from now on.
    mods_only =
      perms
      |> Permissions.put_role(:mods, 0)
      |> Permissions.put_channel(:general, [{:everyone, 0, 0x400}, {:role, :mods, 0x400, 0}])

    run!(guild, fn relays -> elem(Relay.put_permissions(relays, mods_only), 1) end)

    ref = Process.monitor(first)
    Process.exit(first, :kill)
    assert_receive {:DOWN, ^ref, :process, ^first, :killed}

    RelayGuild.wait_until(fn ->
      first not in stats(guild).relays and length(stats(guild).relays) == 2
    end)

    %{relays: relays, sessions: 3, nodes: nodes} = stats(guild)
    [restarted] = relays -- [second]
    assert nodes[node()].relays == 2
    assert Process.alive?(restarted)

    2 = dispatch(guild, :after)
    messages = Receivers.await(group, 6 + 3 + 3)
    {lost, kept} = Enum.split(messages, 3)

    for {_pid, got} <- lost,
        do: assert(got == [{:guild_event, @guild, 1, :before}, {:guild_relay_down, @guild}])

    for {_pid, got} <- kept,
        do: assert(got == [{:guild_event, @guild, 1, :before}, {:guild_event, @guild, 2, :after}])

    # The restarted relay has room: the next session goes there, and it checks with the
    # permissions of now, which it never had at start.
    {group2, [newcomer, mod]} = Receivers.start(2)

    run!(guild, fn relays ->
      {:ok, relays} = Relay.connect(relays, newcomer, :newcomer, [], active: true)
      {:ok, relays} = Relay.connect(relays, mod, :mod, [:mods], active: true)
      relays
    end)

    3 = dispatch(guild, :mods_only, to: {:channel, :general})
    assert [{_, []}, {_, [{:guild_event, @guild, 3, :mods_only}]}] = Receivers.await(group2, 1)
    assert %{nodes: %{} = nodes} = stats(guild)
    assert nodes[node()].sessions == 5

    GenServer.stop(guild)
    Receivers.stop(group)
    Receivers.stop(group2)
  end

  test "exits are reported in batches, not one message per session" do
    relays = Relay.new(@guild, max_sessions: 100)
    {group, pids} = Receivers.start(300)

    relays =
      Enum.reduce(pids, relays, fn pid, relays ->
        {:ok, relays} = Relay.connect(relays, pid, :member, [], active: true)
        relays
      end)

    {_seq, relays} = Relay.dispatch(relays, :hello)
    Receivers.await(group, 300)
    Receivers.stop(group)

    reports = collect_reports([], 300)
    assert length(reports) <= 6, "#{length(reports)} reports for 300 exits"

    relays =
      Enum.reduce(reports, relays, fn report, relays ->
        {:ok, relays} = Relay.handle_info(report, relays)
        relays
      end)

    assert %{sessions: 0, active: 0, relays: [_, _, _]} = Relay.stats(relays)
  end

  # The relays' reports, until they add up to `exits` exits.
  defp collect_reports(acc, exits) when exits <= 0, do: acc

  defp collect_reports(acc, exits) do
    receive do
      {GuildKit.Relay, _, :report, _, reported, _} = report ->
        collect_reports([report | acc], exits - length(reported))
    after
      10_000 -> flunk("#{exits} exits not reported after #{length(acc)} reports")
    end
  end

  test "handle_info/2 takes the handle's messages and ignores the rest" do
    relays = Relay.new(@guild)
    {:ok, relays} = Relay.connect(relays, self(), :ann, [])
    assert_receive {GuildKit.Relay, _, :flush} = flush
    assert {:ok, relays} = Relay.handle_info(flush, relays)
    assert_receive {GuildKit.Relay, _, :up, _, _, _} = up
    assert {:ok, ^relays} = Relay.handle_info(up, relays)

    for other <- [
          :tick,
          {:DOWN, make_ref(), :process, self(), :normal},
          {GuildKit.Relay, make_ref(), :flush}
        ],
        do: assert(Relay.handle_info(other, relays) == :ignore)
  end

  test "relays stop when their guild exits" do
    {:ok, guild} = RelayGuild.start(@guild, max_sessions: 1)
    {group, pids} = Receivers.start(3)
    connect_all(guild, pids, active: false)
    %{relays: relays} = stats(guild)
    assert length(relays) == 3
    refs = Enum.map(relays, &Process.monitor/1)
    GenServer.stop(guild)
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, :normal})
    Receivers.stop(group)
  end

  test "a session exit is seen by its relay, and the guild learns of it" do
    {:ok, guild} = RelayGuild.start(@guild, [])
    # It exits once it has event 1: had it exited earlier, its relay could see the exit
    # before the event (they come from different processes) and not send it.
    session = spawn(fn -> receive do: ({:guild_event, @guild, 1, :one} -> :ok) end)
    {group, [other]} = Receivers.start(1)
    connect_all(guild, [session, other], active: true)
    1 = dispatch(guild, :one)
    RelayGuild.wait_until(fn -> stats(guild).sessions == 1 end)
    2 = dispatch(guild, :two)

    assert [{_, [{:guild_event, @guild, 1, :one}, {:guild_event, @guild, 2, :two}]}] =
             Receivers.await(group, 2)

    assert %{deliveries: 3} = wait_deliveries(guild, 3)
    GenServer.stop(guild)
    Receivers.stop(group)
  end

  test "a session connected again goes back behind what its old relay still has to send" do
    {:ok, guild} = RelayGuild.start(@guild, max_sessions: 1)
    {group, [session, other]} = Receivers.start(2)
    connect_all(guild, [session], active: true)
    %{relays: [busy]} = stats(guild)

    # The relay falls behind: it holds event 1 for the session when the session leaves,
    # its place is taken, and the session comes back.
    :ok = :sys.suspend(busy)
    1 = dispatch(guild, :one)
    run!(guild, fn relays -> elem(Relay.disconnect(relays, session), 1) end)
    connect_all(guild, [other, session], active: true)
    2 = dispatch(guild, :two)
    :ok = :sys.resume(busy)

    events = [{:guild_event, @guild, 1, :one}, {:guild_event, @guild, 2, :two}]

    assert [{^session, ^events}, {^other, [{:guild_event, @guild, 2, :two}]}] =
             Receivers.await(group, 3)

    # The session exits: the relay it left and came back to reports it once it is gone.
    Receivers.stop(group)
    RelayGuild.wait_until(fn -> stats(guild).sessions == 0 end)
    GenServer.stop(guild)
  end

  test "a relay lost before it carried out a disconnect tells that session; one that confirmed it does not" do
    {:ok, guild} = RelayGuild.start(@guild, max_sessions: 2)
    {group, [leaving, stayed]} = Receivers.start(2)
    connect_all(guild, [leaving, stayed], active: true)
    %{relays: [relay]} = stats(guild)

    # The relay falls behind with event 1 queued when `leaving` disconnects, and dies
    # before it gets to them: event 1 is lost, and `leaving` must be told.
    :ok = :sys.suspend(relay)
    1 = dispatch(guild, :one)
    run!(guild, fn relays -> elem(Relay.disconnect(relays, leaving), 1) end)
    assert %{sessions: 1, leaving: 1} = stats(guild)
    Process.exit(relay, :kill)

    down = {:guild_relay_down, @guild}

    assert [{^leaving, [^down]}, {^stayed, [^down]}] = Receivers.await(group, 2)
    assert %{sessions: 0, leaving: 0} = stats(guild)

    # A disconnect the relay carried out and confirmed: the session already has all it
    # was sent, and a later loss of the relay tells it nothing.
    RelayGuild.wait_until(fn -> length(stats(guild).relays) == 1 end)
    connect_all(guild, [leaving, stayed], active: true)
    %{relays: [relay]} = stats(guild)
    2 = dispatch(guild, :two)
    run!(guild, fn relays -> elem(Relay.disconnect(relays, leaving), 1) end)
    RelayGuild.wait_until(fn -> stats(guild).leaving == 0 end)
    Process.exit(relay, :kill)

    assert [
             {^leaving, [^down, {:guild_event, @guild, 2, :two}]},
             {^stayed, [^down, {:guild_event, @guild, 2, :two}, ^down]}
           ] = Receivers.await(group, 5)

    GenServer.stop(guild)
    Receivers.stop(group)
  end

  defp wait_deliveries(guild, n) do
    RelayGuild.wait_until(fn -> stats(guild).deliveries >= n end)
    stats(guild)
  end
end

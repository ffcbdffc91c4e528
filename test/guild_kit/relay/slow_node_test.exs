defmodule GuildKit.Relay.SlowNodeTest do
  # A relay start on a node that does not answer at once: the guild is not held, what
  # it sends waits in the handle, and the relay's sessions lose nothing, or are told.
  use ExUnit.Case, async: false

  import GuildKit.Test.Peers, only: [start_peer: 1]
  alias GuildKit.Examples.PeerNode
  alias GuildKit.Relay
  alias GuildKit.Test.{Receivers, RelayGuild}

  @moduletag :slow
  @guild :slow_node_guild

  setup_all :start_peer

  setup %{node: node} do
    {:ok, guild} = RelayGuild.start(@guild, max_sessions: 2)
    on_exit(fn -> Process.exit(guild, :kill) end)
    supervisor = PeerNode.call(node, Process, :whereis, [GuildKit.Relay.Supervisor])
    %{guild: guild, supervisor: supervisor}
  end

  defp stats(guild), do: RelayGuild.run(guild, &{Relay.stats(&1), &1})

  defp run!(guild, fun), do: :ok = RelayGuild.run(guild, fn relays -> {:ok, fun.(relays)} end)

  defp connect_all(guild, pids) do
    run!(guild, fn relays ->
      Enum.reduce(pids, relays, fn pid, relays ->
        {:ok, relays} = Relay.connect(relays, pid, :erlang.phash2(pid), [], active: true)
        relays
      end)
    end)
  end

  defp dispatch(guild, event), do: RelayGuild.run(guild, &Relay.dispatch(&1, event))

  # Starts `count` sessions on `node` and connects them while its relay supervisor is
  # suspended, so that their relays' starts wait.
  defp connect_while_suspended(node, guild, supervisor, count) do
    {group, pids} = PeerNode.call(node, Receivers, :start, [count])
    :ok = PeerNode.call(node, :sys, :suspend, [supervisor])
    connect_all(guild, pids)
    {group, pids}
  end

  # A process waiting for a call to `node`'s relay supervisor monitors it by name.
  defp calling_supervisor?(pid, node) do
    case Process.info(pid, :monitors) do
      {:monitors, monitors} -> {:process, {GuildKit.Relay.Supervisor, node}} in monitors
      nil -> false
    end
  end

  test "starts that the node answers late complete later, and nothing sent meanwhile is lost",
       %{node: node, guild: guild, supervisor: supervisor} do
    # A suspended supervisor answers no start: before, connect/5 waited for it forever.
    {group, pids} = connect_while_suspended(node, guild, supervisor, 3)
    assert %{starting: 2, relays: [], sessions: 3, active: 3} = stats(guild)
    assert %{relays: 2, sessions: 3} = stats(guild).nodes[node]

    1 = dispatch(guild, :while_starting)
    run!(guild, &elem(Relay.update_member(&1, :erlang.phash2(hd(pids)), [:late]), 1))
    :ok = PeerNode.call(node, :sys, :resume, [supervisor])
    RelayGuild.wait_until(fn -> stats(guild).starting == 0 end)
    assert [_, _] = stats(guild).relays
    2 = dispatch(guild, :after)

    for {_pid, got} <- PeerNode.call(node, Receivers, :await, [group, 6]) do
      assert got == [
               {:guild_event, @guild, 1, :while_starting},
               {:guild_event, @guild, 2, :after}
             ]
    end
  end

  test "a start that fails tells the sessions that waited for it",
       %{node: node, guild: guild, supervisor: supervisor} do
    {group, pids} = connect_while_suspended(node, guild, supervisor, 2)
    assert %{starting: 1, sessions: 2} = stats(guild)
    1 = dispatch(guild, :never_delivered)

    # The supervisor dies with the start request unanswered (the application restarts it).
    true = PeerNode.call(node, Process, :exit, [supervisor, :kill])
    # Within 3 s: the failed call says so, before the 5 s deadline would.
    RelayGuild.wait_until(fn -> stats(guild).starting == 0 end, 300)
    assert %{sessions: 0, relays: [], nodes: nodes} = stats(guild)
    assert nodes == %{}

    for {_pid, got} <- PeerNode.call(node, Receivers, :await, [group, 2]),
        do: assert(got == [{:guild_relay_down, @guild}])

    # The restarted supervisor starts relays again.
    RelayGuild.wait_until(fn ->
      is_pid(PeerNode.call(node, Process, :whereis, [GuildKit.Relay.Supervisor]))
    end)

    {group2, [again]} = PeerNode.call(node, Receivers, :start, [1])
    connect_all(guild, [again])
    RelayGuild.wait_until(fn -> stats(guild).starting == 0 end)
    2 = dispatch(guild, :back)

    assert [{^again, [{:guild_event, @guild, 2, :back}]}] =
             PeerNode.call(node, Receivers, :await, [group2, 1])
  end

  test "a start that does not answer within 5 s is given up; the late relay is taken back empty",
       %{node: node, guild: guild, supervisor: supervisor} do
    {group, [session]} = connect_while_suspended(node, guild, supervisor, 1)
    1 = dispatch(guild, :held_then_dropped)
    assert %{starting: 1, sessions: 1} = stats(guild)
    assert Enum.any?(Process.list(), &calling_supervisor?(&1, node))

    RelayGuild.wait_until(fn -> stats(guild).starting == 0 end, 1_000)
    assert %{sessions: 0, relays: []} = stats(guild)
    # Nothing here waits for that supervisor any more.
    RelayGuild.wait_until(fn -> not Enum.any?(Process.list(), &calling_supervisor?(&1, node)) end)

    assert [{^session, [{:guild_relay_down, @guild}]}] =
             PeerNode.call(node, Receivers, :await, [group, 1])

    # The supervisor answers at last: its relay announces itself and is taken back,
    # without sessions, and new sessions of that node can go to it.
    :ok = PeerNode.call(node, :sys, :resume, [supervisor])
    RelayGuild.wait_until(fn -> match?([_], stats(guild).relays) end)
    assert %{sessions: 0, nodes: %{^node => %{relays: 1}}} = stats(guild)
  end
end

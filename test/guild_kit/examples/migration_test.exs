defmodule GuildKit.Examples.MigrationTest do
  @moduledoc """
  The migration example over a `:peer` node: a guild of 200,000 members hands itself
  off while a publisher keeps sending events. Every session must deliver every event
  exactly once and in order, the new guild must hold the members the events leave,
  and the old guild must never hold a normal scheduler, nor spend in a garbage
  collection, 5 ms or more.
  """
  use ExUnit.Case, async: false
  import GuildKit.Test.Peers, only: [start_peer: 1]
  alias GuildKit.Examples.Migration, as: Guild
  alias GuildKit.Examples.Migration.Session
  alias GuildKit.{MemberList, SortedSet}
  alias GuildKit.Test.SchedulerWatch

  doctest GuildKit.Examples.Migration

  @moduletag :slow
  @moduletag timeout: 180_000
  @members 200_000
  @sessions 20

  setup_all :start_peer

  test "a hand-off to another node loses, repeats and reorders nothing, and never blocks the old guild",
       %{node: node} do
    members = for i <- 1..@members, do: {i, "member #{i}"}
    {:ok, old} = Guild.start(id: {:guild, System.unique_integer()}, members: members)
    sessions = for _ <- 1..@sessions, do: elem(Session.start(old), 1)

    # Watch the old guild from now on: its own setup (building the set from a list)
    # is not part of the hand-off.
    # Reports count only for stretches that used 5 ms of CPU: an OS preemption of the
    # old guild's scheduler thread is not the guild holding it.
    :erlang.garbage_collect(old)
    watch = SchedulerWatch.start(:no_fanout, [old], 5)

    test = self()
    publisher = spawn_link(fn -> publish(old, 1, test) end)
    # Some events before, during and after the hand-off.
    Process.sleep(100)
    assert {:ok, new} = Guild.hand_off(old, node)
    assert node(new) == node
    Process.sleep(100)
    send(publisher, :stop)
    assert_receive {:published, count}, 10_000
    pauses = SchedulerWatch.stop(watch)
    assert pauses == [], "the old guild was blocked: #{inspect(pauses)}"

    assert count > 20, "only #{count} events were published"
    expected = for seq <- 1..count, do: {seq, event(seq)}

    for session <- sessions do
      assert Session.wait_for(session, count) == expected
    end

    info = Guild.info(new)
    assert %{seq: ^count, phase: :serving, sessions: @sessions} = info
    assert Guild.info(old) == info, "the old guild forwards to the new one"

    # The new guild's members and sidebar are the old ones after every event.
    oracle = SortedSet.from_enumerable(members)
    for seq <- 1..count, do: apply_event(oracle, event(seq))
    {members_dump, sidebar_dump} = Guild.members_dump(new)
    assert SortedSet.to_list(SortedSet.from_binary(members_dump)) == SortedSet.to_list(oracle)
    sidebar = MemberList.from_binary(sidebar_dump)
    assert MemberList.member_count(sidebar) == SortedSet.size(oracle)
    rows = MemberList.rows(sidebar, 0, 2 * @members)

    for {id, _name} <- Enum.take_random(SortedSet.to_list(oracle), 200) do
      assert Enum.at(rows, MemberList.index_of(sidebar, id)) == {:member, id}
    end
  end

  # Joins and leaves of members, and plain messages, one about every millisecond.
  defp publish(guild, seq, test) do
    receive do
      :stop -> send(test, {:published, seq - 1})
    after
      1 ->
        Guild.publish(guild, event(seq))
        publish(guild, seq + 1, test)
    end
  end

  defp event(seq) do
    case rem(seq, 3) do
      0 -> {:join, {@members + seq, "new #{seq}"}}
      1 -> {:leave, {seq, "member #{seq}"}}
      2 -> {:message, seq}
    end
  end

  defp apply_event(set, {:join, member}), do: SortedSet.add(set, member)
  defp apply_event(set, {:leave, member}), do: SortedSet.remove(set, member)
  defp apply_event(set, {:message, _}), do: set
end

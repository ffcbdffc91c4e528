defmodule GuildKit.Handoff.PeerDumpTest do
  @moduledoc """
  A dump made on this node, sent to a `:peer` node in a message, loads there into an
  equal set: the node that loads it did not create it.
  """
  use ExUnit.Case, async: false
  import GuildKit.Test.Peers, only: [start_peer: 1]
  alias GuildKit.Examples.PeerNode
  alias GuildKit.{MemberList, SortedSet}

  @moduletag :slow
  @moduletag timeout: 120_000

  setup_all :start_peer

  test "a set's dump sent to another node loads there", %{node: node} do
    set = SortedSet.from_enumerable(for i <- 1..20_000, do: {i, "member #{i}", i / 3})
    dump = SortedSet.to_binary(set)

    # A process on the peer receives the dump as a message and answers with what it
    # loaded.
    {loader, _binding} =
      PeerNode.call(node, Code, :eval_string, [
        """
        spawn(fn ->
          receive do
            {:dump, from, dump} ->
              set = GuildKit.SortedSet.from_binary(dump)
              send(from, {:loaded, node(), GuildKit.SortedSet.size(set),
                          GuildKit.SortedSet.to_list(set), GuildKit.SortedSet.to_binary(set)})
          end
        end)
        """
      ])

    send(loader, {:dump, self(), dump})
    assert_receive {:loaded, ^node, size, list, dump_there}, 30_000
    assert size == 20_000
    assert list == SortedSet.to_list(set)
    assert dump_there == dump
  end

  test "a member list's dump sent to another node loads there", %{node: node} do
    list = MemberList.new(groups: [:online, :offline])
    for i <- 1..5_000, do: MemberList.put(list, i, Enum.random([:online, :offline]), -i / 2)
    MemberList.watch(list, {0, 99})
    MemberList.watch(list, {4_000, 4_099})
    dump = MemberList.to_binary(list)

    {rows_there, _binding} =
      PeerNode.call(node, Code, :eval_string, [
        """
        list = GuildKit.MemberList.from_binary(dump)
        {node(), GuildKit.MemberList.rows(list, 0, 10_000), GuildKit.MemberList.index_of(list, 17),
         GuildKit.MemberList.put(list, 0, :online, 0), GuildKit.MemberList.to_binary(list)}
        """,
        [dump: dump]
      ])

    {^node, rows, index, ops, _dump_after} = rows_there
    assert rows == MemberList.rows(list, 0, 10_000)
    assert index == MemberList.index_of(list, 17)
    # The windows came along: the same put reports the same ops there.
    assert ops == MemberList.put(list, 0, :online, 0)
  end
end

defmodule GuildKit.Handoff.PeerDumpTest do
  @moduledoc """
  A dump made on this node, sent to a `:peer` node in a message, loads there into an
  equal set: the node that loads it did not create it.
  """
  use ExUnit.Case, async: false
  alias GuildKit.Examples.PeerNode
  alias GuildKit.SortedSet

  @moduletag :slow
  @moduletag timeout: 120_000

  setup_all do
    peer = PeerNode.start()
    on_exit(fn -> PeerNode.stop(peer) end)
    %{node: peer.node}
  end

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
end

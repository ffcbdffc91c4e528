defmodule GuildKit.Test.FakePids do
  @moduledoc """
  Pids of nodes that do not run (or do not exist), made from the external term format
  (`NEW_PID_EXT`), for tests of unreachable nodes that need no peer.
  """

  @doc """
  Returns `count` distinct pids of node `node`, e.g. `:"ghost@10.255.255.1"`.

  For this node's own name the pids belong to another incarnation of it (another
  creation), like pids left over from before a restart: never to a live process.
  """
  @spec pids(node(), non_neg_integer()) :: [pid()]
  def pids(node, count) when is_atom(node) do
    name = Atom.to_string(node)
    creation = if node == node(), do: other_creation(), else: 1

    for id <- 1..count//1 do
      # NEW_PID_EXT (88): node as SMALL_ATOM_UTF8_EXT (119), then ID, Serial, Creation.
      :erlang.binary_to_term(
        <<131, 88, 119, byte_size(name), name::binary, id::32, 0::32, creation::32>>
      )
    end
  end

  defp other_creation do
    case :erlang.system_info(:creation) do
      1 -> 2
      _ -> 1
    end
  end
end

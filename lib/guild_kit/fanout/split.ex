defmodule GuildKit.Fanout.Split do
  # The per-receiver work of a fan-out: the NIF split of a receiver list into worker
  # batches (pids of this node) and a list of other nodes' pids, and the grouping of
  # those by node, which the NIF cannot do (a remote pid's node is not readable
  # through the NIF API).
  @moduledoc false

  alias GuildKit.Native

  @typedoc "Pids of this node for one worker bucket: `{bucket, batch, count}`."
  @type batch :: {non_neg_integer(), reference(), pos_integer()}

  @typedoc "Pids of other nodes, `{list, count}`, or nil when there are none."
  @type remote :: {reference(), pos_integer()} | nil

  @doc """
  Splits `receivers`, a list of pids and nils, for `workers` buckets: the bucket of a
  pid of this node is `rem(:erlang.phash2(pid), workers)`. Runs in NIF slices of a few
  thousand receivers on the caller's scheduler. Returns `{:bad_receiver, position}`
  for an element that is neither a pid nor nil, and raises `ArgumentError` for an
  improper list.

  Time: O(n).
  """
  @spec split([pid() | nil], pos_integer()) ::
          {:ok, [batch()], remote()} | {:bad_receiver, non_neg_integer()}
  def split(receivers, workers), do: receivers |> Native.fanout_split(workers) |> more()

  defp more({:guild_kit_more, rest, progress}),
    do: rest |> Native.fanout_split_more(progress) |> more()

  defp more({:guild_kit_bad_receiver, position}), do: {:bad_receiver, position}
  defp more({batches, remote}), do: {:ok, batches, remote}

  @doc "Number of pids in a remote list."
  @spec count(remote()) :: non_neg_integer()
  def count(nil), do: 0
  def count({_list, count}), do: count

  @doc """
  Groups pids by node: `[{node, pids}]`, each group in no particular order.

  One pass keeps up to four nodes and their lists in arguments (about 7 ns a pid,
  against about 40 ns for a map of accumulators); pids of a fifth and further nodes are
  set aside and grouped with a map, so any number of nodes costs O(n).
  """
  @spec group_by_node([pid()]) :: [{node(), [pid()]}]
  def group_by_node(pids), do: slots(pids, nil, [], nil, [], nil, [], nil, [], [])

  defp slots([pid | rest], n1, p1, n2, p2, n3, p3, n4, p4, others) do
    case node(pid) do
      ^n1 -> slots(rest, n1, [pid | p1], n2, p2, n3, p3, n4, p4, others)
      ^n2 -> slots(rest, n1, p1, n2, [pid | p2], n3, p3, n4, p4, others)
      ^n3 -> slots(rest, n1, p1, n2, p2, n3, [pid | p3], n4, p4, others)
      ^n4 -> slots(rest, n1, p1, n2, p2, n3, p3, n4, [pid | p4], others)
      node when n1 == nil -> slots(rest, node, [pid], n2, p2, n3, p3, n4, p4, others)
      node when n2 == nil -> slots(rest, n1, p1, node, [pid], n3, p3, n4, p4, others)
      node when n3 == nil -> slots(rest, n1, p1, n2, p2, node, [pid], n4, p4, others)
      node when n4 == nil -> slots(rest, n1, p1, n2, p2, n3, p3, node, [pid], others)
      _fifth -> slots(rest, n1, p1, n2, p2, n3, p3, n4, p4, [pid | others])
    end
  end

  defp slots([], n1, p1, n2, p2, n3, p3, n4, p4, others) do
    kept =
      for {node, pids} <- [{n1, p1}, {n2, p2}, {n3, p3}, {n4, p4}], node != nil, do: {node, pids}

    kept ++ group_with_map(others, %{})
  end

  defp group_with_map([pid | rest], groups) do
    node = node(pid)

    case groups do
      %{^node => pids} -> group_with_map(rest, %{groups | node => [pid | pids]})
      _ -> group_with_map(rest, Map.put(groups, node, [pid]))
    end
  end

  defp group_with_map([], groups), do: Map.to_list(groups)
end

defmodule GuildKit.Fanout.Sender do
  # How often a message waiting for a busy distribution buffer is retried.
  @retry_ms 2

  # Packed messages bigger than this cross to another node in parts of this size: the
  # receiving process decodes a message in one go (a 64 MB binary held it 21 ms).
  @part_bytes 256 * 1024

  # Carries fan-out messages to the receivers of other nodes.
  #
  # Each instance runs `:senders` of these on each node (registered as
  # `GuildKit.Fanout.Sender.0`, ... for the application's instance). A caller hands its
  # receivers on other nodes to the sender its partitioner key selects,
  # `:erlang.phash2(key, senders)` (the caller's pid unless it set a key, see
  # `GuildKit.Fanout.set_partitioner_key/1`), so that all its messages stay in order. The
  # sender reads the receivers in chunks of a few thousand, groups each chunk by node and
  # sends each node, per chunk, one message to the partitioner that the key selects there.
  # The message travels in that message when it is small, and packed in parts of
  # `@part_bytes` sent ahead of the receivers when it is big, so that no
  # process on either side handles a huge message in one go.
  #
  # ## Unreachable nodes
  #
  # The caller never sends across the network; only senders do, and they never block
  # on a node. Each remote send uses `:erlang.send/3` with `[:noconnect, :nosuspend]`:
  #
  #   * a node that is not connected is not dialled: its receivers are dropped at once
  #     and counted in `GuildKit.Fanout.stats/1` as `:dropped`. (A plain send to such a
  #     node does not block either, but it starts a connection attempt that, for an
  #     unreachable host, holds every message sent meanwhile for up to
  #     `net_setuptime`, 7 s by default, and then loses them silently.)
  #   * a connected node whose distribution buffer is full (a slow or hung node) does
  #     not suspend the sender, as a plain send would: the message is queued for that
  #     node alone and retried every `@retry_ms` ms, later messages to that node queue
  #     behind it (order is kept), and other nodes are served meanwhile. When the node
  #     goes down its queue is dropped and counted.
  @moduledoc false

  use GenServer

  alias GuildKit.Fanout.{Runtime, Split}
  alias GuildKit.Native

  # After this long without a message the sender hibernates, which frees the garbage
  # of the last lists it carried.
  @idle_ms 1_000

  @doc false
  # Receivers of other nodes of one send, for partitioner `partitioner` on each node.
  @spec forward(pid(), Split.remote(), reference(), atom(), boolean()) :: :ok
  def forward(sender, remote, message, partitioner, pack) do
    send(sender, {:guild_kit_fanout_remote, remote, message, partitioner, pack})
    :ok
  end

  @doc false
  # Pids of other nodes of one send, as a list, with the message itself, which is small.
  @spec forward_list(pid(), [pid()], term(), atom(), boolean()) :: :ok
  def forward_list(sender, pids, message, partitioner, pack) do
    send(sender, {:guild_kit_fanout_remote_list, pids, message, partitioner, pack})
    :ok
  end

  @impl GenServer
  def init(runtime) do
    # Tells the sender when a node with queued messages goes down.
    :ok = :net_kernel.monitor_nodes(true)
    # node => :queue of {message, receivers} waiting for a busy distribution buffer
    {:ok, %{runtime: runtime, waiting: %{}}}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_remote, {list, _count}, message, partitioner, pack}, state) do
    {payload, parts} = payload(Native.fanout_message_export(message, pack))
    {state, nodes} = forward_chunks(list, partitioner, payload, parts, state, MapSet.new())

    # Lets each node's partitioner forget the parts of this message.
    state =
      Enum.reduce(nodes, state, fn node, state ->
        enqueue(state, node, {partitioner, {:guild_kit_fanout_release, elem(payload, 1)}, 0})
      end)

    {:noreply, state, @idle_ms}
  end

  # A small message: inline, or packed as `Native.fanout_message_export/2` packs (the
  # external term format), and never in parts.
  def handle_info({:guild_kit_fanout_remote_list, pids, message, partitioner, pack}, state) do
    payload = if pack, do: {:packed, :erlang.term_to_binary(message)}, else: {:term, message}
    {state, _nodes} = forward_by_node(pids, partitioner, payload, nil, state, MapSet.new())
    {:noreply, state, @idle_ms}
  end

  def handle_info({:guild_kit_fanout_retry, node}, state) do
    {:noreply, flush_waiting(node, state), @idle_ms}
  end

  def handle_info(:timeout, state), do: {:noreply, state, :hibernate}

  def handle_info({:nodedown, node}, state) do
    {queue, waiting} = Map.pop(state.waiting, node, :queue.new())

    for {_name, _message, count} <- :queue.to_list(queue) do
      drop(state, count)
    end

    {:noreply, %{state | waiting: waiting}, @idle_ms}
  end

  # :nodeup, and anything stray.
  def handle_info(_other, state), do: {:noreply, state, @idle_ms}

  # {payload, parts}: the payload that goes with each chunk of receivers, and the parts
  # to send each node first, or nil.
  defp payload({:packed, binary}) when byte_size(binary) > @part_bytes do
    ref = make_ref()
    {{:parts, ref}, for(part <- parts(binary, 0), do: {:guild_kit_fanout_part, ref, part})}
  end

  defp payload(inline), do: {inline, nil}

  defp parts(binary, at) when byte_size(binary) - at <= @part_bytes,
    do: [binary_part(binary, at, byte_size(binary) - at)]

  defp parts(binary, at),
    do: [binary_part(binary, at, @part_bytes) | parts(binary, at + @part_bytes)]

  defp forward_chunks(list, partitioner, payload, parts, state, nodes) do
    {pids, done} = Native.fanout_remote_take(list)
    {state, nodes} = forward_by_node(pids, partitioner, payload, parts, state, nodes)

    if done,
      do: {state, nodes},
      else: forward_chunks(list, partitioner, payload, parts, state, nodes)
  end

  # `nodes`: the nodes that were sent the parts of the message already.
  defp forward_by_node(pids, partitioner, payload, parts, state, nodes) do
    pids
    |> Split.group_by_node()
    |> Enum.reduce({state, nodes}, fn {node, receivers}, {state, nodes} ->
      forward_chunk(state, nodes, node, receivers, partitioner, payload, parts)
    end)
  end

  defp forward_chunk(state, nodes, node, receivers, _partitioner, _payload, _parts)
       when node == node() do
    # Pids of an earlier run of this node: their processes are gone.
    drop(state, length(receivers))
    {state, nodes}
  end

  defp forward_chunk(state, nodes, node, receivers, partitioner, payload, nil) do
    message = {:guild_kit_fanout_receivers, receivers, payload}
    {enqueue(state, node, {partitioner, message, length(receivers)}), nodes}
  end

  defp forward_chunk(state, nodes, node, receivers, partitioner, payload, parts) do
    {state, nodes} =
      if MapSet.member?(nodes, node) do
        {state, nodes}
      else
        state = Enum.reduce(parts, state, &enqueue(&2, node, {partitioner, &1, 0}))
        {state, MapSet.put(nodes, node)}
      end

    forward_chunk(state, nodes, node, receivers, partitioner, payload, nil)
  end

  # Sends `entry` ({name, message, receivers}) to `node`, or queues it behind the
  # messages already waiting for that node, to keep their order.
  defp enqueue(state, node, entry) do
    case state.waiting do
      %{^node => queue} -> %{state | waiting: %{state.waiting | node => :queue.in(entry, queue)}}
      _ -> flush_queue(node, :queue.from_list([entry]), state)
    end
  end

  defp flush_waiting(node, state) do
    case Map.fetch(state.waiting, node) do
      {:ok, queue} -> flush_queue(node, queue, state)
      :error -> state
    end
  end

  defp flush_queue(node, queue, state) do
    case :queue.peek(queue) do
      :empty ->
        %{state | waiting: Map.delete(state.waiting, node)}

      {:value, {name, message, count}} ->
        # :ok, or :noconnect (not connected; no attempt is made), or :nosuspend (the
        # distribution buffer is full; nothing was sent).
        case :erlang.send({name, node}, message, [:noconnect, :nosuspend]) do
          :ok ->
            flush_queue(node, :queue.drop(queue), state)

          :noconnect ->
            drop(state, count)
            flush_queue(node, :queue.drop(queue), state)

          :nosuspend ->
            Process.send_after(self(), {:guild_kit_fanout_retry, node}, @retry_ms)
            %{state | waiting: Map.put(state.waiting, node, queue)}
        end
    end
  end

  defp drop(_state, 0), do: :ok
  defp drop(state, count), do: Runtime.count(state.runtime, :dropped, count)
end

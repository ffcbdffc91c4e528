defmodule GuildKit.Fanout.Sender do
  # How often a message waiting for a busy distribution buffer is retried.
  @retry_ms 2

  # Carries one caller's fan-out messages to the partitioners of every node.
  #
  # Each node runs `:senders` of these (registered as `GuildKit.Fanout.Sender.0`, ...).
  # A calling process always uses the same one, `rem(:erlang.phash2(caller), senders)`,
  # for every mode, so its messages stay in order. A sender receives either the split
  # the caller's NIF made and sent it (the default) or the raw receiver list to split
  # itself (`offload: true`), then:
  #
  #   * hands the buckets of local receivers to its partitioner on this node;
  #   * groups the other receivers by node and sends each node one message, to the
  #     partitioner with the same index there.
  #
  # ## Unreachable nodes
  #
  # The caller never sends across the network; only senders do, and they never block
  # on a node. Each remote send uses `:erlang.send/3` with `[:noconnect, :nosuspend]`:
  #
  #   * a node that is not connected is not dialled: its receivers are dropped at once
  #     and counted in `GuildKit.Fanout.stats/0` as `:dropped`. (On OTP 25 a plain send
  #     to such a node does not block either, measured at 22 µs, but it starts a
  #     connection attempt that, for an unreachable host, holds every message sent
  #     meanwhile for up to `net_setuptime`, 7 s by default, and then loses them
  #     silently.)
  #   * a connected node whose distribution buffer is full (a slow or hung node) does
  #     not suspend the sender, as a plain send would: the message is queued for that
  #     node alone and retried every `@retry_ms` ms, later messages to that node queue
  #     behind it (order is kept), and other nodes are served meanwhile. When the node
  #     goes down its queue is dropped and counted.
  @moduledoc false

  use GenServer

  alias GuildKit.Fanout
  alias GuildKit.Fanout.{Partitioner, Runtime}

  # After this long without a message the sender hibernates, which frees the garbage
  # of the last lists it carried (tens of MB after a few 100k-receiver sends).
  @idle_ms 1_000

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    index = Keyword.fetch!(opts, :index)
    GenServer.start_link(__MODULE__, opts, name: Runtime.sender_name(index))
  end

  @impl GenServer
  def init(opts) do
    # Tells the sender when a node with queued messages goes down.
    :ok = :net_kernel.monitor_nodes(true)
    partitioners = Keyword.fetch!(opts, :partitioners)

    state = %{
      partitioner: Runtime.partitioner_name(rem(Keyword.fetch!(opts, :index), partitioners)),
      # node => :queue of messages waiting for a busy distribution buffer
      waiting: %{},
      counters: Runtime.counters()
    }

    {:ok, state}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_split, split, payload}, state) do
    {:noreply, route(split, payload, state), @idle_ms}
  end

  def handle_info({:guild_kit_fanout_offload, receivers, message, pack}, state) do
    payload = Fanout.pack(message, pack)
    workers = Runtime.get().workers
    {:noreply, route(Fanout.split(receivers, workers), payload, state), @idle_ms}
  end

  def handle_info({:guild_kit_fanout_retry, node}, state) do
    {:noreply, flush_waiting(node, state), @idle_ms}
  end

  def handle_info(:timeout, state), do: {:noreply, state, :hibernate}

  def handle_info({:nodedown, node}, state) do
    {queue, waiting} = Map.pop(state.waiting, node, :queue.new())

    for {_message, count} <- :queue.to_list(queue) do
      Runtime.count(state.counters, :dropped, count)
    end

    {:noreply, %{state | waiting: waiting}, @idle_ms}
  end

  # :nodeup, and anything stray.
  def handle_info(_other, state), do: {:noreply, state, @idle_ms}

  defp route({buckets, counts, local_count, remote, remote_count}, payload, state) do
    if local_count > 0 do
      send_local(state, buckets, counts, local_count, payload)
    end

    if remote_count > 0 do
      remote
      |> Fanout.group_by_node()
      |> Enum.reduce(state, fn {node, receivers}, state ->
        send_remote(state, node, receivers, payload)
      end)
    else
      state
    end
  end

  defp send_local(state, buckets, counts, count, payload) do
    case Process.whereis(state.partitioner) do
      # Restarting after a crash: what it held is gone already; these are too.
      nil -> Runtime.count(state.counters, :dropped, count)
      pid -> Partitioner.send_buckets(pid, buckets, counts, count, payload)
    end
  end

  defp send_remote(state, node, receivers, _payload) when node == node() do
    # Pids of an earlier run of this node: their processes are gone.
    Runtime.count(state.counters, :dropped, length(receivers))
    state
  end

  defp send_remote(state, node, receivers, payload) do
    # The count is needed only if the message is dropped, but cheap: ~1 ns a pid.
    entry = {Partitioner.receivers_message(receivers, payload), length(receivers)}

    case state.waiting do
      # Behind the messages already waiting for this node, to keep their order.
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

      {:value, {message, count}} ->
        case remote_send(state.partitioner, node, message) do
          :ok ->
            flush_queue(node, :queue.drop(queue), state)

          :noconnect ->
            Runtime.count(state.counters, :dropped, count)
            flush_queue(node, :queue.drop(queue), state)

          :nosuspend ->
            Process.send_after(self(), {:guild_kit_fanout_retry, node}, @retry_ms)
            %{state | waiting: Map.put(state.waiting, node, queue)}
        end
    end
  end

  # :ok, or :noconnect (not connected; no attempt is made), or :nosuspend (the
  # distribution buffer is full; nothing was sent).
  defp remote_send(name, node, message) do
    :erlang.send({name, node}, message, [:noconnect, :nosuspend])
  end
end

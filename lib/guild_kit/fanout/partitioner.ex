defmodule GuildKit.Fanout.Partitioner do
  # Hands the receivers of this node to workers, and replays what a dead worker had not
  # served.
  #
  # Each instance runs `:partitioners` of these on each node (registered as
  # `GuildKit.Fanout.Partitioner.0`, `.1`, ... for the application's instance), each in
  # a partition supervisor with `:workers` workers of its own:
  #
  #     partition (rest_for_one)
  #     ├── Partitioner
  #     └── workers (one_for_one)
  #         └── Worker 0, Worker 1, ...
  #
  # A caller on this node sends its partitioner the receivers of this node already split
  # into worker batches (with `offload: true`, in one batch that the partitioner splits);
  # senders of other nodes, and callers with a few receivers and a small message, send
  # it lists of pids, which it splits with the same NIF. A
  # receiver always lands in the same bucket, `rem(:erlang.phash2(pid), workers)`, so
  # every message for it goes through one worker, in order.
  #
  # ## Nothing is lost when a worker dies
  #
  # The partitioner monitors its workers and keeps every batch it gave a worker until
  # the batch is served. When a worker dies, the workers' supervisor starts a new one,
  # which announces itself; the partitioner then replays to it, in order and before
  # anything newer, every batch the old one had not finished. A batch counts the
  # receivers served (a process is never killed in the middle of a NIF call), so the
  # replay resumes exactly there: no receiver is skipped or served twice.
  #
  # ## Order when a partitioner dies
  #
  # Its partition supervisor terminates the workers, and waits until each is dead,
  # before it starts the new partitioner and workers: no worker of the dead partitioner
  # can still be delivering while the new ones deliver newer messages. What the dead
  # partitioner and its workers had not delivered is lost.
  @moduledoc false

  use GenServer

  alias GuildKit.Fanout.{Runtime, Split, Worker}
  alias GuildKit.Native

  # While batches are outstanding, finished ones are dropped at least this often so
  # the partitioner does not keep served receiver lists alive.
  @prune_ms 100

  # Parts of a message from another node whose receivers never came (their sender
  # died between the two) are dropped after this long.
  @parts_ttl_ms 60_000

  @doc false
  # Local receivers of one send, split for `workers` buckets: `[{index, batch, count}]`.
  @spec deliver(
          pid(),
          pos_integer(),
          [{non_neg_integer(), reference(), pos_integer()}],
          reference()
        ) ::
          :ok
  def deliver(partitioner, workers, batches, message) do
    send(partitioner, {:guild_kit_fanout_local, workers, batches, message})
    :ok
  end

  @doc false
  # Pids of this node of one send, as a list, with the message itself: split here.
  @spec deliver_list(pid(), [pid()], term()) :: :ok
  def deliver_list(partitioner, pids, message) do
    send(partitioner, {:guild_kit_fanout_receivers, pids, {:term, message}})
    :ok
  end

  @impl GenServer
  def init(runtime) do
    count = runtime.workers

    state = %{
      runtime: runtime,
      # The current worker of each bucket, nil until it announces itself.
      workers: Tuple.duplicate(nil, count),
      # Workers announced so far for each bucket: each after the first is a restart.
      generations: Tuple.duplicate(0, count),
      # Per bucket, the :queue of {batch, message} given to the worker and not known
      # to be served.
      pending: Tuple.duplicate(:queue.new(), count),
      # Batches in `pending`, all buckets together.
      outstanding: 0,
      # Messages from other nodes that travel in parts: ref => {parts, message, since}.
      parts: %{}
    }

    {:ok, state}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_local, workers, batches, message}, state) do
    state = receive_batches(state, workers, batches, message)
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:guild_kit_fanout_receivers, pids, payload}, state) do
    state =
      case message_of(payload, state) do
        {:ok, message, state} ->
          workers = tuple_size(state.workers)

          case Split.split(pids, workers) do
            {:ok, batches, remote} ->
              # Pids sent here that are not of this node are from an earlier run of
              # it, whose processes are all gone.
              drop(state, Split.count(remote))
              receive_batches(state, workers, batches, message)

            {:bad_receiver, _position} ->
              drop(state, length(pids))
              state
          end

        {:error, state} ->
          drop(state, length(pids))
          state
      end

    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:guild_kit_fanout_part, ref, part}, state) do
    {parts, message, since} = Map.get(state.parts, ref, {[], nil, now()})
    state = %{state | parts: Map.put(state.parts, ref, {[part | parts], message, since})}
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:guild_kit_fanout_release, ref}, state) do
    state = %{state | parts: Map.delete(state.parts, ref)}
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:guild_kit_fanout_worker, index, pid}, state) do
    Process.monitor(pid)
    generation = elem(state.generations, index)
    if generation > 0, do: Runtime.count(state.runtime, :worker_restarts, 1)
    state = prune_at(state, index)

    # In order, so the new worker serves the replay before anything newer. A replaced
    # worker is certainly dead: its supervisor starts the new one only after that.
    for {batch, message} <- :queue.to_list(elem(state.pending, index)),
        do: Worker.deliver(pid, batch, message)

    state = %{
      state
      | workers: put_elem(state.workers, index, pid),
        generations: put_elem(state.generations, index, generation + 1)
    }

    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    state =
      case Enum.find_index(Tuple.to_list(state.workers), &(&1 == pid)) do
        # A worker already replaced (its successor announced itself first).
        nil -> state
        index -> %{state | workers: put_elem(state.workers, index, nil)}
      end

    {:noreply, state, idle_timeout(state)}
  end

  def handle_info(:timeout, state) do
    state = Enum.reduce(0..(tuple_size(state.pending) - 1), state, &prune_at(&2, &1))

    limit = now() - @parts_ttl_ms

    state = %{
      state
      | parts: Map.reject(state.parts, fn {_ref, {_, _, since}} -> since < limit end)
    }

    {:noreply, state, idle_timeout(state)}
  end

  def handle_info(_other, state), do: {:noreply, state, idle_timeout(state)}

  # Receivers split for `workers` buckets: for this worker count, as they are; for any
  # other (one, for `offload: true`, or an old count while the instance restarted with
  # a new one) split again first.
  defp receive_batches(state, workers, batches, message) do
    count = tuple_size(state.workers)

    batches =
      if workers == count,
        do: batches,
        else:
          Enum.flat_map(batches, fn {_, batch, _} -> Native.fanout_partition(batch, count) end)

    Enum.reduce(batches, state, fn {index, batch, receivers}, state ->
      Runtime.count(state.runtime, :delivered_to_workers, receivers)
      assign(state, index, batch, message)
    end)
  end

  defp assign(state, index, batch, message) do
    case elem(state.workers, index) do
      # Not announced yet: the batch waits in `pending` for the worker.
      nil -> :ok
      worker -> Worker.deliver(worker, batch, message)
    end

    state = prune_at(state, index)
    queue = :queue.in({batch, message}, elem(state.pending, index))
    %{state | pending: put_elem(state.pending, index, queue), outstanding: state.outstanding + 1}
  end

  # Drops the served batches at the front of bucket `index`'s queue.
  defp prune_at(state, index) do
    {queue, dropped} = prune(elem(state.pending, index), 0)

    %{
      state
      | pending: put_elem(state.pending, index, queue),
        outstanding: state.outstanding - dropped
    }
  end

  defp prune(queue, dropped) do
    case :queue.peek(queue) do
      {:value, {batch, _message}} ->
        if Native.fanout_batch_done(batch),
          do: prune(:queue.drop(queue), dropped + 1),
          else: {queue, dropped}

      :empty ->
        {queue, dropped}
    end
  end

  # The message of receivers from another node: a term, one packed binary, or a
  # reference to parts that came before.
  defp message_of({:term, term}, state), do: {:ok, Native.fanout_message(term), state}

  defp message_of({:packed, binary}, state),
    do: checked(Native.fanout_message_import(binary), state)

  defp message_of({:parts, ref}, state) do
    case Map.fetch(state.parts, ref) do
      {:ok, {_parts, message, _since}} when message != nil ->
        {:ok, message, state}

      {:ok, {parts, nil, since}} ->
        case checked(Native.fanout_message_import(Enum.reverse(parts)), state) do
          {:ok, message, state} ->
            {:ok, message, %{state | parts: Map.put(state.parts, ref, {[], message, since})}}

          error ->
            error
        end

      :error ->
        {:error, state}
    end
  end

  defp message_of(_other, state), do: {:error, state}

  defp checked(:error, state), do: {:error, state}
  defp checked(message, state), do: {:ok, message, state}

  defp drop(_state, 0), do: :ok
  defp drop(state, count), do: Runtime.count(state.runtime, :dropped, count)

  defp idle_timeout(state) do
    if state.parts == %{} and state.outstanding == 0,
      do: :hibernate,
      else: @prune_ms
  end

  defp now, do: System.monotonic_time(:millisecond)
end

defmodule GuildKit.Fanout.Partitioner do
  # Hands the receivers of this node to workers, and supervises those workers.
  #
  # Each node runs `:partitioners` of these (registered as
  # `GuildKit.Fanout.Partitioner.0`, `.1`, ...), each with `:workers` workers of its own.
  # Senders on any node send a partitioner the receivers it must serve on this node,
  # either already split into worker buckets (from a sender on this node) or as a plain
  # list (from another node), which it splits with the same NIF. Every receiver always
  # lands in the same bucket, `rem(:erlang.phash2(pid), workers)`, so all messages for it
  # go through one worker, in order.
  #
  # ## No message is lost when a worker dies
  #
  # The partitioner links its workers and traps their exits. It keeps every batch it
  # gave a worker until the worker's progress counter (see `GuildKit.Fanout.Worker`)
  # shows it done. When a worker dies, the partitioner starts a new one in its place and
  # replays, in order, every batch the old one had not finished, starting at the first
  # receiver it had not served, before it hands out anything newer. This also covers
  # batches sent to the worker after its death and before the exit signal arrived.
  # (Manifold put the `{:ok, pid}` returned by `start_link` where the pid belonged, so
  # its next send crashed the partitioner and was lost.)
  @moduledoc false

  use GenServer

  alias GuildKit.Fanout
  alias GuildKit.Fanout.{Runtime, Worker}

  # While batches are outstanding, finished ones are dropped at least this often so
  # the partitioner does not hold on to delivered receiver lists.
  @prune_ms 100

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    index = Keyword.fetch!(opts, :index)
    GenServer.start_link(__MODULE__, opts, name: Runtime.partitioner_name(index))
  end

  @doc false
  @spec send_buckets(pid(), tuple(), tuple(), non_neg_integer(), Fanout.payload()) :: :ok
  def send_buckets(partitioner, buckets, counts, count, payload) do
    send(partitioner, {:guild_kit_fanout_buckets, buckets, counts, count, payload})
    :ok
  end

  @doc false
  @spec receivers_message([pid()], Fanout.payload()) :: tuple()
  def receivers_message(receivers, payload), do: {:guild_kit_fanout_receivers, receivers, payload}

  @impl GenServer
  def init(opts) do
    Process.flag(:trap_exit, true)
    count = Keyword.fetch!(opts, :workers)
    progress = for _ <- 1..count, do: :atomics.new(1, signed: false)

    state = %{
      workers: progress |> Enum.map(&start_worker/1) |> List.to_tuple(),
      progress: List.to_tuple(progress),
      # Receivers handed to each worker so far, counted like its progress counter.
      assigned: Tuple.duplicate(0, count),
      # Per worker, a queue of {first, last + 1, receivers, payload} not yet done.
      pending: Tuple.duplicate(:queue.new(), count),
      counters: Runtime.counters()
    }

    {:ok, state}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_buckets, buckets, counts, count, payload}, state)
      when tuple_size(buckets) == tuple_size(state.workers) do
    Runtime.count(state.counters, :delivered_to_workers, count)
    state = dispatch(state, buckets, counts, payload, 0)
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:guild_kit_fanout_buckets, buckets, _counts, _count, payload}, state) do
    # Split for another worker count: the component restarted with a new config while
    # this message was on its way. Split again for the current count.
    receivers = buckets |> Tuple.to_list() |> Enum.concat()
    handle_info({:guild_kit_fanout_receivers, receivers, payload}, state)
  end

  def handle_info({:guild_kit_fanout_receivers, receivers, payload}, state) do
    {buckets, counts, count, _stale, stale_count} =
      Fanout.split(receivers, tuple_size(state.workers))

    # Pids sent here that are not local are from an earlier run of this node, whose
    # processes are all gone.
    Runtime.count(state.counters, :dropped, stale_count)
    Runtime.count(state.counters, :delivered_to_workers, count)
    state = dispatch(state, buckets, counts, payload, 0)
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info({:EXIT, pid, _reason}, state) do
    case worker_index(state.workers, pid) do
      nil -> {:noreply, state, idle_timeout(state)}
      index -> {:noreply, restart_worker(state, index), idle_timeout(state)}
    end
  end

  def handle_info(:timeout, state) do
    state = prune_all(state)
    {:noreply, state, idle_timeout(state)}
  end

  def handle_info(_other, state), do: {:noreply, state, idle_timeout(state)}

  defp start_worker(progress) do
    {:ok, pid} = Worker.start_link(progress)
    pid
  end

  defp dispatch(state, buckets, _counts, _payload, index) when index == tuple_size(buckets),
    do: state

  defp dispatch(state, buckets, counts, payload, index) do
    state =
      case elem(counts, index) do
        0 -> state
        count -> assign(state, index, elem(buckets, index), count, payload)
      end

    dispatch(state, buckets, counts, payload, index + 1)
  end

  defp assign(state, index, receivers, count, payload) do
    Worker.deliver(elem(state.workers, index), receivers, payload)
    first = elem(state.assigned, index)
    last = first + count
    queue = prune(elem(state.pending, index), elem(state.progress, index))
    queue = :queue.in({first, last, receivers, payload}, queue)

    %{
      state
      | assigned: put_elem(state.assigned, index, last),
        pending: put_elem(state.pending, index, queue)
    }
  end

  defp restart_worker(state, index) do
    Runtime.count(state.counters, :worker_restarts, 1)
    progress = elem(state.progress, index)
    worker = start_worker(progress)
    queue = prune(elem(state.pending, index), progress)
    done = :atomics.get(progress, 1)

    # In order, so the new worker serves the replay before anything newer.
    for {first, _last, receivers, payload} <- :queue.to_list(queue) do
      Worker.deliver(worker, Enum.drop(receivers, max(done - first, 0)), payload)
    end

    %{
      state
      | workers: put_elem(state.workers, index, worker),
        pending: put_elem(state.pending, index, queue)
    }
  end

  # Drops the batches the worker has finished.
  defp prune(queue, progress) do
    done = :atomics.get(progress, 1)
    drop_done(queue, done)
  end

  defp drop_done(queue, done) do
    case :queue.peek(queue) do
      {:value, {_first, last, _receivers, _payload}} when last <= done ->
        drop_done(:queue.drop(queue), done)

      _ ->
        queue
    end
  end

  defp prune_all(state) do
    pending =
      state.pending
      |> Tuple.to_list()
      |> Enum.zip(Tuple.to_list(state.progress))
      |> Enum.map(fn {queue, progress} -> prune(queue, progress) end)
      |> List.to_tuple()

    %{state | pending: pending}
  end

  defp idle_timeout(state) do
    if Enum.all?(Tuple.to_list(state.pending), &:queue.is_empty/1),
      do: :hibernate,
      else: @prune_ms
  end

  defp worker_index(workers, pid) do
    Enum.find_index(Tuple.to_list(workers), &(&1 == pid))
  end
end

defmodule GuildKit.Test.Receivers do
  @moduledoc """
  Groups of receiver processes that record every message they get, in order, on this
  node or (through `GuildKit.Examples.PeerNode.call/5`) on a peer.

      {group, pids} = GuildKit.Test.Receivers.start(1_000)
      GuildKit.Fanout.send(pids, :hello)
      [{pid, [:hello]} | _] = GuildKit.Test.Receivers.await(group, 1_000)
      GuildKit.Test.Receivers.stop(group)

  A group's receivers share a counter of messages received, so waiting for a total
  costs one counter read per poll, not a message per receiver.
  """

  @typedoc "A group of receivers on this node."
  @type group :: {module(), integer()}

  # Once the expected total is reached, how long to keep watching for extra messages
  # (duplicates) before reading the receivers.
  @settle_ms 100

  @doc "Starts `count` receivers and returns the group and their pids, in order."
  @spec start(non_neg_integer()) :: {group(), [pid()]}
  def start(count) do
    counter = :counters.new(1, [:write_concurrency])
    pids = for _ <- 1..count//1, do: spawn(fn -> loop(counter, []) end)
    group = {__MODULE__, System.unique_integer([:positive])}
    :persistent_term.put(group, {counter, pids})
    {group, pids}
  end

  @doc """
  Waits until the group has received `total` messages in all (raising after `timeout`
  ms), waits a little longer for any extra ones, and returns each receiver's messages
  in the order it got them: `[{pid, messages}]`, in the order of `start/1`.

  With `only: :tag`, each message that is a tuple is replaced by its first element,
  so large messages are not copied back to the caller's node; with `only: :digest`,
  by `{first element, :erlang.phash2(message)}`.
  """
  @spec await(group(), non_neg_integer(), timeout(), keyword()) :: [{pid(), [term()]}]
  def await(group, total, timeout \\ 30_000, opts \\ []) do
    {counter, pids} = :persistent_term.get(group)
    deadline = System.monotonic_time(:millisecond) + timeout
    wait_for(counter, total, deadline)
    Process.sleep(@settle_ms)
    results = messages(pids)

    case Keyword.get(opts, :only, :whole) do
      :whole -> results
      :digest -> for {pid, messages} <- results, do: {pid, Enum.map(messages, &digest/1)}
      :tag -> for {pid, messages} <- results, do: {pid, Enum.map(messages, &tag/1)}
    end
  end

  defp tag(message) when is_tuple(message) and tuple_size(message) > 0, do: elem(message, 0)
  defp tag(message), do: message

  defp digest(message), do: {tag(message), :erlang.phash2(message)}

  @doc """
  Starts a `GuildKit.Fanout` instance with `opts` that outlives the calling process
  (for a peer, where `GuildKit.Examples.PeerNode.call/5` runs in a short-lived one).
  """
  @spec start_fanout(keyword()) :: pid()
  def start_fanout(opts) do
    {:ok, pid} = GuildKit.Fanout.start_link(opts)
    Process.unlink(pid)
    pid
  end

  @doc "Number of messages the group has received so far."
  @spec received(group()) :: non_neg_integer()
  def received(group) do
    {counter, _pids} = :persistent_term.get(group)
    :counters.get(counter, 1)
  end

  @doc "Each receiver's messages so far, in order: `[{pid, messages}]`."
  @spec messages([pid()]) :: [{pid(), [term()]}]
  def messages(pids) do
    ref = make_ref()
    for pid <- pids, do: send(pid, {__MODULE__, :report, self(), ref})

    for pid <- pids do
      receive do
        {^ref, ^pid, messages} -> {pid, messages}
      after
        30_000 -> raise "receiver #{inspect(pid)} did not report"
      end
    end
  end

  @doc "Stops the group's receivers."
  @spec stop(group()) :: :ok
  def stop(group) do
    {_counter, pids} = :persistent_term.get(group)
    Enum.each(pids, &Process.exit(&1, :kill))
    :persistent_term.erase(group)
    :ok
  end

  defp wait_for(counter, total, deadline) do
    poll(deadline, fn ->
      received = :counters.get(counter, 1)
      if received >= total, do: :ok, else: {:waiting, "#{received} of #{total} messages"}
    end)
  end

  @doc """
  Waits until the group has received no message for `quiet_ms` (raising after
  `timeout` ms) and returns its total so far: after a run that lost messages, whose
  total is not known, the count that later sends add to.
  """
  @spec settle(group(), non_neg_integer(), timeout()) :: non_neg_integer()
  def settle(group, quiet_ms, timeout \\ 60_000) do
    {counter, _pids} = :persistent_term.get(group)
    deadline = System.monotonic_time(:millisecond) + timeout

    poll(deadline, fn ->
      before = :counters.get(counter, 1)
      Process.sleep(quiet_ms)
      if :counters.get(counter, 1) == before, do: :ok, else: {:waiting, "quiet receivers"}
    end)

    :counters.get(counter, 1)
  end

  # Calls `check` every few ms until it returns :ok; raises once past `deadline`.
  defp poll(deadline, check) do
    with {:waiting, what} <- check.() do
      if System.monotonic_time(:millisecond) > deadline do
        raise "receivers got #{what} before the timeout"
      end

      Process.sleep(5)
      poll(deadline, check)
    end
  end

  defp loop(counter, messages) do
    receive do
      {__MODULE__, :report, from, ref} ->
        send(from, {ref, self(), Enum.reverse(messages)})
        loop(counter, messages)

      message ->
        :counters.add(counter, 1, 1)
        loop(counter, [message | messages])
    end
  end
end

defmodule GuildKit.Test.SchedulerWatch do
  @moduledoc """
  Watches, on this node or (through `GuildKit.Examples.PeerNode.call/5`) on a peer,
  the processes of a `GuildKit.Fanout` instance for `long_schedule` (and `long_gc`)
  reports, as `GuildKit.Test.LongSchedule` does for one call: the watcher process owns
  the system monitor while it runs, and keeps the reports of the watched processes.

      watch = GuildKit.Test.SchedulerWatch.start(GuildKit.Fanout, [], 5)
      # ... fan out ...
      [] = GuildKit.Test.SchedulerWatch.stop(watch)

  `long_schedule` measures wall time, so on a loaded machine it also reports a process
  whose scheduler thread the OS preempted (a plain Erlang loop gets 6-17 ms reports at a
  load of 7 on 2 cores). The watcher therefore also traces when each watched process
  is scheduled in and out, with CPU-time stamps (`:cpu_timestamp`: the scheduler
  thread's CPU clock), and keeps a process's reports only if one of its stretches on a
  normal scheduler used `threshold_ms` of CPU or more: a process that really holds a
  scheduler burns that CPU, a preempted one does not. Stretches on dirty schedulers
  (those that end in `:erts_internal.dirty_nif_finalizer/1`) are not counted, as
  `long_schedule` does not count them.
  """

  alias GuildKit.Test.HelperProcess

  @dirty_exit {:erts_internal, :dirty_nif_finalizer, 1}

  @doc """
  Starts watching every process of the fan-out instance `name` (its partitioners,
  workers and senders, as its supervisor lists them; none when no instance of that
  name runs) and the pids in `extra`, at `threshold_ms`. Returns the watcher's pid.
  """
  @spec start(atom(), [pid()], pos_integer()) :: pid()
  def start(name, extra, threshold_ms) do
    supervisor = GuildKit.Fanout.Runtime.supervisor_name(name)
    watched = Enum.uniq(extra ++ descendants(Process.whereis(supervisor)))

    HelperProcess.start(
      fn ->
        :erlang.system_monitor(self(), [{:long_schedule, threshold_ms}, {:long_gc, threshold_ms}])
        :erlang.trace(:all, true, [:cpu_timestamp])

        for pid <- watched do
          :erlang.trace(pid, true, [:running, :timestamp, {:tracer, self()}])
        end
      end,
      fn ->
        collect(
          %{watched: MapSet.new(watched), limit: threshold_ms * 1000},
          %{},
          [],
          MapSet.new()
        )
      end
    )
  end

  @doc """
  Stops watching and returns the reports of the processes that used `threshold_ms` of
  CPU on a normal scheduler in one go: `[{pid, kind, info}]`.
  """
  @spec stop(pid()) :: [{pid(), atom(), term()}]
  def stop(watcher) do
    # A report is sent when a process is scheduled out: give the last ones a moment,
    # and let every trace message reach the watcher before it is asked to stop.
    Process.sleep(50)
    delivered = :erlang.trace_delivered(:all)
    receive do: ({:trace_delivered, :all, ^delivered} -> :ok)
    HelperProcess.stop(watcher)
  end

  # `since`: pid => CPU stamp of its last schedule-in; `held`: pids with a stretch
  # over the limit.
  defp collect(watch, since, reports, held) do
    receive do
      {:monitor, pid, kind, info} ->
        if MapSet.member?(watch.watched, pid),
          do: collect(watch, since, [{pid, kind, info} | reports], held),
          else: collect(watch, since, reports, held)

      {:trace_ts, pid, :in, _mfa, stamp} ->
        collect(watch, Map.put(since, pid, stamp), reports, held)

      {:trace_ts, pid, :out, mfa, stamp} ->
        {start, since} = Map.pop(since, pid)

        held =
          if start != nil and mfa != @dirty_exit and :timer.now_diff(stamp, start) >= watch.limit,
            do: MapSet.put(held, pid),
            else: held

        collect(watch, since, reports, held)

      {:stop, from} ->
        :erlang.system_monitor(:undefined)

        for pid <- watch.watched do
          try do
            :erlang.trace(pid, false, [:running, :timestamp])
          rescue
            ArgumentError -> :gone
          end
        end

        :erlang.trace(:all, false, [:cpu_timestamp])
        reports = for {pid, _, _} = report <- Enum.reverse(reports), pid in held, do: report
        send(from, {:stopped, self(), reports})
    end
  end

  @doc """
  Traces the messages `pid` receives and keeps the largest external size
  (`:erlang.external_size/1`) among them, until `stop_trace/1`, which returns it.
  """
  @spec trace_sizes(pid() | atom()) :: pid()
  def trace_sizes(pid) do
    HelperProcess.start(
      fn -> :erlang.trace(Process.whereis(pid) || pid, true, [:receive]) end,
      fn -> sizes(0) end
    )
  end

  @doc "Stops a tracer of `trace_sizes/1` and returns the largest size it saw, in bytes."
  @spec stop_trace(pid()) :: non_neg_integer()
  def stop_trace(tracer), do: HelperProcess.stop(tracer)

  defp sizes(largest) do
    receive do
      {:trace, _pid, :receive, message} -> sizes(max(largest, :erlang.external_size(message)))
      {:stop, from} -> send(from, {:stopped, self(), largest})
    end
  end

  defp descendants(nil), do: []

  defp descendants(supervisor) do
    Enum.flat_map(:supervisor.which_children(supervisor), fn
      {_id, pid, :supervisor, _} when is_pid(pid) -> descendants(pid)
      {_id, pid, :worker, _} when is_pid(pid) -> [pid]
      _restarting -> []
    end)
  end
end

defmodule GuildKit.Test.FanoutFaults do
  @moduledoc """
  Helpers of the fan-out fault and order tests: a killer that keeps killing fan-out
  processes, a relay of sends between processes, and a check of sequences that may
  have lost messages.
  """

  import ExUnit.Assertions
  alias GuildKit.Test.HelperProcess

  @doc """
  Starts a linked process that, every 10-30 ms, kills the process `victim.()` returns
  (a pid, or nil to skip a turn), until `stop/1`.
  """
  @spec start_killer((() -> pid() | nil)) :: pid()
  def start_killer(victim), do: spawn_link(fn -> kill_loop(victim, 0) end)

  @doc "Stops a killer and returns how many processes it killed."
  @spec stop_killer(pid()) :: non_neg_integer()
  def stop_killer(killer), do: HelperProcess.stop(killer)

  defp kill_loop(victim, kills) do
    receive do
      {:stop, from} -> send(from, {:stopped, self(), kills})
    after
      Enum.random(10..30) ->
        case victim.() do
          pid when is_pid(pid) ->
            Process.exit(pid, :kill)
            kill_loop(victim, kills + 1)

          nil ->
            kill_loop(victim, kills)
        end
    end
  end

  @doc """
  Asserts that each receiver's `{:seq, n}` messages never go back (an older one after
  a newer one), that no message came more than `copies` times (the receiver's
  listings), and that each of `complete` came exactly `copies` times.
  """
  @spec assert_ordered([{pid(), [term()]}], pos_integer(), Range.t()) :: :ok
  def assert_ordered(results, copies, complete) do
    for {_pid, messages} <- results do
      seqs = for {:seq, seq} <- messages, do: seq
      assert length(seqs) == length(messages)
      assert seqs == Enum.sort(seqs)
      counts = Enum.frequencies(seqs)
      assert Enum.all?(counts, fn {_seq, count} -> count <= copies end)
      got = Map.new(complete, &{&1, Map.get(counts, &1, 0)})

      assert Enum.all?(got, fn {_seq, count} -> count == copies end),
             "a receiver got these copies of #{inspect(complete)}, not #{copies} of each: " <>
               "#{inspect(got)} (#{length(seqs)} messages, the last #{inspect(List.last(seqs))})"
    end

    :ok
  end

  @doc """
  Sends `{:seq, 1}` .. `{:seq, count}` with `GuildKit.Fanout.send/3` to `receivers`,
  taking turns between `processes` processes: each sends the next one only after the
  previous one's `send/3` has returned. `setup.(i)` runs first in the `i`-th process;
  `opts_for.(seq)` gives each call's options.
  """
  @spec relay(
          [pid()],
          pos_integer(),
          pos_integer(),
          (pos_integer() -> term()),
          (pos_integer() -> keyword())
        ) ::
          :ok
  def relay(receivers, count, processes, setup, opts_for) do
    parent = self()

    relays =
      for i <- 1..processes do
        spawn_link(fn ->
          setup.(i)
          relay_loop(receivers, opts_for, parent)
        end)
      end

    for seq <- 1..count do
      send(Enum.at(relays, rem(seq, processes)), {:send, seq})
      assert_receive {:sent, ^seq}, 5_000
    end

    Enum.each(relays, &send(&1, :stop))
  end

  defp relay_loop(receivers, opts_for, parent) do
    receive do
      {:send, seq} ->
        :ok = GuildKit.Fanout.send(receivers, {:seq, seq}, opts_for.(seq))
        send(parent, {:sent, seq})
        relay_loop(receivers, opts_for, parent)

      :stop ->
        :ok
    end
  end

  @doc """
  Waits until every sender and partitioner of the fan-out instance `name` on this node
  runs again after kills, and each partitioner's workers have announced themselves to
  it; fails after `timeout` ms. Until then a send may still be dropped, as documented:
  a caller waits only briefly for a partitioner or sender that is being restarted.
  """
  @spec await_running(atom(), timeout()) :: :ok
  def await_running(name \\ GuildKit.Fanout, timeout \\ 10_000) do
    runtime = GuildKit.Fanout.Runtime.fetch!(name)
    senders = Tuple.to_list(runtime.senders)
    partitioners = Tuple.to_list(runtime.partitioners)

    wait_until(
      fn ->
        Enum.all?(senders, &Process.whereis/1) and Enum.all?(partitioners, &workers_announced?/1)
      end,
      timeout
    )
  end

  @doc """
  True when the partitioner `partitioner` (a pid or a registered name) runs and knows a
  worker for each of its buckets: false while it, or a worker, is being restarted.
  """
  @spec workers_announced?(pid() | atom()) :: boolean()
  def workers_announced?(partitioner) do
    partitioner |> :sys.get_state() |> Map.fetch!(:workers) |> Tuple.to_list() |> Enum.all?()
  catch
    # Not registered yet, or killed while asked.
    :exit, _reason -> false
  end

  @doc "Waits until `check.()` is true, polling every 2 ms; fails after `timeout` ms."
  @spec wait_until((() -> boolean()), timeout()) :: :ok
  def wait_until(check, timeout \\ 60_000) do
    deadline = System.monotonic_time(:millisecond) + timeout
    wait(check, deadline)
  end

  defp wait(check, deadline) do
    cond do
      check.() ->
        :ok

      System.monotonic_time(:millisecond) > deadline ->
        flunk("the condition did not hold in time")

      true ->
        Process.sleep(2)
        wait(check, deadline)
    end
  end
end

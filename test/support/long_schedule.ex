defmodule GuildKit.Test.LongSchedule do
  @moduledoc """
  Runs a function in a fresh process and reports every time that process held a normal
  scheduler for `threshold_ms` or more (`:erlang.system_monitor/2`, `long_schedule`),
  and, when asked, every garbage collection of it that took that long (`long_gc`).

  Following the platform facts, the input is built first in a process with a heap big
  enough that neither building it nor receiving the result triggers a garbage
  collection (which would show up as a long schedule of its own), older reports are
  flushed, and only reports about that process during the measured call are counted.
  Time on dirty schedulers is never reported.

  `long_schedule` and `long_gc` measure wall time, so on a loaded machine they also
  report a process whose scheduler thread the OS preempted (a plain Erlang loop gets
  6-17 ms reports at a load of 7 on 2 cores; so do the VM's own threads competing for 2
  cores). `measure/3` therefore also traces the process's stretches on normal
  schedulers by the scheduler thread's CPU clock, and keeps a `long_schedule` report
  only if a stretch between the same two functions used `threshold_ms` of CPU or more
  (a `long_gc` report, if any stretch did): a call that holds a scheduler burns that
  CPU, a preempted one does not (`GuildKit.Test.SchedulerWatch` does the same for
  fan-out processes).

  The measured function runs in the calling process of the NIF, so the return path is
  measured too: a result built on a dirty scheduler is merged into that process's heap
  after the NIF returns, and that pause (or the collection it causes) is reported
  against the same process. Pass a small `:min_heap_words` to see what a result costs
  a process whose heap was not sized for it.
  """

  @measurements 3

  @doc """
  Builds the input with `setup.()`, then measures `fun.(input)`. Returns
  `{result, reports}` where `reports` lists the monitor infos seen during the call.

  Options:

    * `:threshold_ms` - the shortest pause reported (default 5).
    * `:min_heap_words` - the measured process's minimum heap size (default 40M words,
      room for the largest inputs of the test suite without a collection).
    * `:watch` - the monitors to watch, among `:long_schedule` and `:long_gc` (default
      `[:long_schedule]`). With `:long_gc`, each report is tagged:
      `[monitor: :long_gc, timeout: ms, ...]`; `long_schedule` reports stay as the VM
      gives them.

  `fun` should return a small value: the result is sent back as a message, and copying
  a large one would be measured too.

  A measurement with reports is made again, from a fresh `setup.()`, up to
  #{@measurements} in all, and the last one is returned: a call that holds a scheduler
  does so on every run with the same input, while a stretch that the machine made long
  (the hypervisor taking the vCPU from a scheduler thread whose CPU clock still runs, a
  burst of cache misses from a neighbour) seldom comes in every one. `setup` and `fun`
  must therefore be safe to run more than once. Each kept report carries the CPU time of
  its stretch and the process's garbage collections inside it (`cpu_ms`, `gc_ms`,
  `gcs`), to tell the call's own work from the collection of what it built.
  """
  @spec measure((() -> input), (input -> result), keyword()) :: {result, [term()]}
        when input: term(), result: term()
  def measure(setup, fun, opts \\ []),
    do: retried(@measurements, fn -> measure_once(setup, fun, opts) end, &match?({_, []}, &1))

  @doc """
  Runs `run.()` again while `clean?.(result)` is false, up to `tries` runs in all, and
  returns the last result. The rule of every scheduler check of the suite (this
  module's `measure/3`, the fan-out watches, the demo's stall count): a process that
  holds a scheduler does so on every run of the same work, while a stretch that the
  machine made long (the hypervisor taking the vCPU from a scheduler thread whose CPU
  clock still runs, a burst of cache misses from a neighbour) seldom comes in every one.
  `run` must be safe to run more than once.
  """
  @spec retried(pos_integer(), (() -> result), (result -> boolean())) :: result
        when result: term()
  def retried(tries, run, clean?) do
    result = run.()
    if tries == 1 or clean?.(result), do: result, else: retried(tries - 1, run, clean?)
  end

  defp measure_once(setup, fun, opts) do
    threshold = Keyword.get(opts, :threshold_ms, 5)
    watch = Keyword.get(opts, :watch, [:long_schedule])
    previous = :erlang.system_monitor()
    {pid, _ref} = caller = spawn_ready(setup, fun, opts)
    tracer = trace_slices(pid, :cpu)
    :erlang.system_monitor(self(), Enum.map(watch, &{&1, threshold}))
    flush_reports()
    result = run_to_exit(caller)
    # A report is sent when the process is scheduled out, which may come after its last
    # message: a moment more before restoring the monitor.
    Process.sleep(20)
    restore(previous)
    reports = collect_reports(pid)
    {longest, by_place} = longest_by_place(tracer, pid)
    # Reports count only if the process really used a scheduler that long (see the
    # moduledoc): a stretch preempted by the OS takes wall time, not CPU time. A
    # long_schedule report is matched with the stretches between the same two
    # functions; a long_gc report with the longest stretch.
    limit = threshold * 1000

    real? = fn
      [{:monitor, :long_gc} | _] -> longest >= limit
      info -> stretch_micros(by_place, info) >= limit
    end

    {result, reports |> Enum.filter(real?) |> Enum.map(&with_stretch(&1, by_place))}
  end

  defp stretch_micros(by_place, info) do
    {micros, _gc_ms, _gcs} = Map.get(by_place, {info[:in], info[:out]}, {0, 0, []})
    micros
  end

  # A kept long_schedule report, with what the matching stretch spent: its CPU time,
  # and the garbage collections of the process's own heap inside it.
  defp with_stretch([{:monitor, :long_gc} | _] = info, _by_place), do: info

  defp with_stretch(info, by_place) do
    {micros, gc_ms, gcs} = Map.fetch!(by_place, {info[:in], info[:out]})
    info ++ [cpu_ms: div(micros, 1000), gc_ms: gc_ms, gcs: gcs]
  end

  @doc """
  `measure/3`, asserting that no report came. Returns the result.
  """
  @spec assert_no_long_schedule((() -> input), (input -> result), keyword()) :: result
        when input: term(), result: term()
  def assert_no_long_schedule(setup, fun, opts \\ []) do
    {result, reports} = measure(setup, fun, opts)
    ExUnit.Assertions.assert(reports == [], "normal scheduler held too long: #{inspect(reports)}")
    result
  end

  @doc """
  Builds the input with `setup.()`, then runs `fun.(input)` while tracing when its
  process is scheduled in and out. Returns `{result, longest}`: `longest` is the
  longest time in microseconds that the process ran on a normal scheduler without
  being scheduled out (time on dirty schedulers, id 0 in the trace, is not counted).

  Finer than `measure/3` (microseconds rather than a millisecond threshold) and meant
  for recording figures; a loaded machine inflates it as it does `long_schedule`.
  Takes the `:min_heap_words` option of `measure/3`.
  """
  @spec longest_slice((() -> input), (input -> result), keyword()) :: {result, non_neg_integer()}
        when input: term(), result: term()
  def longest_slice(setup, fun, opts \\ []) do
    {pid, _ref} = caller = spawn_ready(setup, fun, opts)
    tracer = trace_slices(pid, :wall)
    result = run_to_exit(caller)
    {result, longest(tracer, pid)}
  end

  # Traces when `pid` is scheduled in and out, by the wall clock or by the scheduler
  # thread's CPU clock (`:cpu_timestamp`, a node-wide flag: the tests that measure are
  # not async). Returns the tracer, which `longest/2` asks for the longest stretch.
  defp trace_slices(pid, clock) do
    parent = self()

    tracer =
      spawn_link(fn ->
        if clock == :cpu, do: :erlang.trace(:all, true, [:cpu_timestamp])
        send(parent, {:tracing, self()})
        collect_slices(clock, nil, 0)
      end)

    receive do: ({:tracing, ^tracer} -> :ok)
    stamp = if clock == :cpu, do: :timestamp, else: :monotonic_timestamp

    :erlang.trace(pid, true, [
      :running,
      :garbage_collection,
      stamp,
      :scheduler_id,
      {:tracer, tracer}
    ])

    tracer
  end

  # The longest stretch in microseconds, once every trace message of `pid` (which has
  # exited) has reached the tracer.
  defp longest(tracer, pid), do: tracer |> longest_by_place(pid) |> elem(0)

  # The longest stretch, and the longest per pair of functions it went in and out at.
  defp longest_by_place(tracer, pid) do
    delivered = :erlang.trace_delivered(pid)
    receive do: ({:trace_delivered, ^pid, ^delivered} -> :ok)
    send(tracer, {:report, self()})
    receive do: ({:longest, longest, by_place} -> {longest, by_place})
  end

  # Pairs each `in` on a normal scheduler with the next `out`; `since` is `{stamp, mfa}`.
  # Garbage collections are traced too: `gc` holds the stamp and heap info of the one
  # under way and the time collections took in the current stretch, so that a report
  # can say how much of its stretch was the process collecting its own heap.
  defp collect_slices(clock, since, longest, by_place \\ %{}, gc \\ %{at: nil, in: 0, info: []}) do
    receive do
      {:trace_ts, _pid, :in, mfa, scheduler, t} when scheduler > 0 ->
        collect_slices(clock, {t, place(mfa)}, longest, by_place, %{gc | in: 0, info: []})

      {:trace_ts, _pid, :out, mfa, _scheduler, t} when since != nil ->
        {start, from} = since
        micros = micros(clock, start, t)
        entry = {micros, div(gc.in, 1000), gc.info}

        by_place = Map.update(by_place, {from, place(mfa)}, entry, &max(&1, entry))

        collect_slices(clock, nil, max(longest, micros), by_place, gc)

      {:trace_ts, _pid, kind, info, _scheduler, t}
      when kind in [:gc_minor_start, :gc_major_start] ->
        collect_slices(clock, since, longest, by_place, %{gc | at: {t, kind, info}})

      {:trace_ts, _pid, kind, _info, _scheduler, t}
      when kind in [:gc_minor_end, :gc_major_end] and gc.at != nil ->
        {start, started, info} = gc.at
        took = micros(clock, start, t)
        seen = [{started, took, Keyword.take(info, [:heap_size, :old_heap_size, :mbuf_size])}]

        collect_slices(clock, since, longest, by_place, %{
          gc
          | at: nil,
            in: gc.in + took,
            info: gc.info ++ seen
        })

      {:trace_ts, _pid, _event, _mfa, _scheduler, _t} ->
        collect_slices(clock, nil, longest, by_place, gc)

      {:report, to} ->
        if clock == :cpu, do: :erlang.trace(:all, false, [:cpu_timestamp])
        send(to, {:longest, longest, by_place})
    end
  end

  # A trace names an unknown function 0; the system monitor, :undefined.
  defp place(0), do: :undefined
  defp place(mfa), do: mfa

  defp micros(:wall, since, t), do: :erlang.convert_time_unit(t - since, :native, :microsecond)
  defp micros(:cpu, since, t), do: :timer.now_diff(t, since)

  @doc """
  Spawns the caller of a measured call: a process (with a heap of `:min_heap_words`, as
  in `measure/3`) that builds its input with `setup.()` and then waits. Returns
  `{pid, monitor_ref}` once the input is built; `run/1` then makes the call
  `fun.(input)`, and `stop/1` ends the process. For tests that watch the call their own
  way.
  """
  @spec spawn_ready((() -> input), (input -> term()), keyword()) :: {pid(), reference()}
        when input: term()
  def spawn_ready(setup, fun, opts \\ []) do
    min_heap_words = Keyword.get(opts, :min_heap_words, 40_000_000)
    parent = self()

    {pid, ref} =
      :erlang.spawn_opt(
        fn ->
          input = setup.()
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)
          result = fun.(input)
          send(parent, {:done, self(), result})
          # Waiting here schedules the process out (an exit would not, for a trace of
          # `running` only), which ends its last slice.
          receive do: (:stop -> :ok)
        end,
        [:monitor, min_heap_size: min_heap_words]
      )

    receive do
      {:ready, ^pid} -> {pid, ref}
      {:DOWN, ^ref, :process, ^pid, reason} -> raise "setup crashed: #{inspect(reason)}"
    end
  end

  @doc "Makes the call of a `spawn_ready/3` process and returns its result."
  @spec run({pid(), reference()}) :: term()
  def run({pid, ref}) do
    send(pid, :go)

    receive do
      {:done, ^pid, result} -> result
      {:DOWN, ^ref, :process, ^pid, reason} -> raise "measured call crashed: #{inspect(reason)}"
    end
  end

  @doc "Ends a `spawn_ready/3` process after its call, and waits until it has exited."
  @spec stop({pid(), reference()}) :: :ok
  def stop({pid, ref}) do
    send(pid, :stop)
    receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
  end

  defp run_to_exit(caller) do
    result = run(caller)
    stop(caller)
    result
  end

  defp restore(:undefined), do: :erlang.system_monitor(:undefined)
  defp restore({monitor, options}), do: :erlang.system_monitor(monitor, options)

  defp flush_reports do
    receive do
      {:monitor, _, kind, _} when kind in [:long_schedule, :long_gc] -> flush_reports()
    after
      0 -> :ok
    end
  end

  defp collect_reports(pid) do
    receive do
      {:monitor, ^pid, :long_schedule, info} ->
        [info | collect_reports(pid)]

      {:monitor, ^pid, :long_gc, info} ->
        [[monitor: :long_gc] ++ info | collect_reports(pid)]

      {:monitor, _other, kind, _info} when kind in [:long_schedule, :long_gc] ->
        collect_reports(pid)
    after
      0 -> []
    end
  end
end

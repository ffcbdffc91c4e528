# Tells a long NIF call from OS preemption, for MemberList's scheduler tests.
#
#     MIX_ENV=prod mix run bench/member_list_preemption.exs
#
# `long_schedule` measures wall time: when the machine has fewer idle cores than runnable
# threads, Linux takes the CPU away from a scheduler thread in the middle of a call, and
# the call is reported as long. For every NIF call of the two hostile cases (the stream
# of changes on 200,000 members, and a put reaching a million windows), this script reads
# the scheduler thread's `/proc/self/task/TID/schedstat` before and after, and prints the
# calls of 2 ms or more with the time the thread spent waiting on the OS run queue. A
# call whose wall time is mostly run-queue wait was preempted; one whose wall time is
# CPU time is long. A pure-Elixir loop (no NIF) is run under `long_schedule` too, as a
# yardstick of what the machine does to any busy process at that moment.

Code.require_file("support/harness.exs", __DIR__)

alias GuildKit.Bench.Harness
alias GuildKit.{MemberList, Native}

defmodule SchedStat do
  def paths do
    for dir <- Path.wildcard("/proc/self/task/*"),
        comm = String.trim(File.read!(Path.join(dir, "comm"))),
        [n] <- [Regex.run(~r/^(\d+)_scheduler$/, comm, capture: :all_but_first)],
        into: %{},
        do: {String.to_integer(n), Path.join(dir, "schedstat")}
  end

  # {ns on the CPU, ns waiting on the run queue} of the thread of scheduler `id`.
  defp read(paths, id) do
    [run, wait, _] = paths |> Map.fetch!(id) |> File.read!() |> String.split()
    {String.to_integer(run), String.to_integer(wait)}
  end

  # Runs `call` and records {kind, wall µs, CPU µs, run-queue wait µs}.
  def timed(paths, kind, call) do
    id = :erlang.system_info(:scheduler_id)
    {run0, wait0} = read(paths, id)
    t0 = System.monotonic_time()
    result = call.()
    wall = System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond)
    {run1, wait1} = read(paths, id)
    # Kept in ETS, off the heap: a growing list of timings in the measured process
    # would be copied by its collections and show up as long calls of its own.
    :ets.insert(
      :member_list_calls,
      {kind, wall, div(run1 - run0, 1000), div(wait1 - wait0, 1000)}
    )

    result
  end

  # MemberList's delivery loop, each chunk timed.
  def deliver(paths, kind, first) do
    loop(paths, kind, timed(paths, kind, first))
  end

  defp loop(_paths, _kind, result) when is_list(result), do: result

  defp loop(paths, kind, {delivery, position, acc}) do
    next = timed(paths, kind, fn -> Native.member_list_continue(delivery, position, acc) end)
    loop(paths, kind, next)
  end

  def report(title) do
    IO.puts("\n#{title} (load #{Harness.load()})")

    for {kind, calls} <- Enum.group_by(:ets.tab2list(:member_list_calls), &elem(&1, 0)) do
      walls = calls |> Enum.map(&elem(&1, 1)) |> Enum.sort()
      n = length(walls)
      long = for {_, wall, cpu, wait} <- calls, wall >= 2_000, do: {wall, cpu, wait}
      preempted = Enum.count(long, fn {wall, _cpu, wait} -> wait >= wall / 2 end)

      IO.puts(
        "  #{kind}: #{n} calls, wall median #{Enum.at(walls, div(n, 2))} µs, " <>
          "p99 #{Enum.at(walls, div(n * 99, 100))} µs, max #{List.last(walls)} µs; " <>
          "#{length(long)} of 2 ms or more, #{preempted} of them mostly run-queue wait"
      )

      for {wall, cpu, wait} <- Enum.take(Enum.sort(long, :desc), 8),
          do: IO.puts("    wall #{wall} µs, on CPU #{cpu} µs, waiting #{wait} µs")
    end

    :ets.delete_all_objects(:member_list_calls)
  end
end

# Runs `fun` in a process with the hostile test's heap, waits for it.
run = fn fun ->
  {pid, ref} = :erlang.spawn_opt(fun, [:monitor, min_heap_size: 60_000_000])
  receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
end

canary = fn seconds ->
  parent = self()

  {pid, ref} =
    :erlang.spawn_opt(
      fn ->
        receive do: (:go -> :ok)
        deadline = System.monotonic_time(:millisecond) + seconds * 1000
        spin = fn spin -> if System.monotonic_time(:millisecond) < deadline, do: spin.(spin) end
        spin.(spin)
      end,
      [:monitor]
    )

  :erlang.system_monitor(parent, long_schedule: 5)
  send(pid, :go)
  receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
  :erlang.system_monitor(:undefined)

  reports =
    Stream.repeatedly(fn ->
      receive do
        {:monitor, ^pid, :long_schedule, info} -> info[:timeout]
        {:monitor, _, _, _} -> :other
      after
        0 -> nil
      end
    end)
    |> Enum.take_while(&(&1 != nil))
    |> Enum.filter(&is_integer/1)

  IO.puts(
    "\nyardstick: #{seconds} s of pure Elixir work (load #{Harness.load()}): " <>
      "#{length(reports)} long_schedule reports of 5 ms or more #{inspect(Enum.frequencies(reports))}"
  )
end

paths = SchedStat.paths()
:ets.new(:member_list_calls, [:duplicate_bag, :public, :named_table])
canary.(5)

# The stream of changes on 200,000 members (hostile_test.exs).
groups = [:admin, :mod, :online, :offline]
id = fn i -> 100_000_000_000_000_000 + i * 7_919 end
list = MemberList.new(groups: groups)

for i <- 1..200_000,
    do: MemberList.put(list, id.(i), Enum.at(groups, rem(i * 31, 4)), "name#{rem(i * 7, 9_973)}")

for w <- 0..2_999, do: MemberList.watch(list, {w * 50, w * 50 + 99})
ref = list.ref

run.(fn ->
  SchedStat.deliver(paths, :rows, fn -> Native.member_list_rows(ref, 0, 200_010) end)
  SchedStat.deliver(paths, :watch, fn -> Native.member_list_watch(ref, 0, 50_000) end)

  for i <- 1..5_000 do
    group = Enum.random(groups)
    SchedStat.deliver(paths, :put, fn -> Native.member_list_put(ref, id.(i), group, "r#{i}") end)
    SchedStat.deliver(paths, :touch, fn -> Native.member_list_touch(ref, id.(i)) end)
    SchedStat.timed(paths, :index_of, fn -> Native.member_list_index_of(ref, id.(i)) end)
  end

  SchedStat.report("stream of changes, 200,000 members, 3,000 windows")
end)

# A put reaching a million windows (hostile_test.exs).
list = MemberList.new(groups: [:admin, :online, :offline])

for i <- 1..10_000,
    do:
      MemberList.put(
        list,
        i,
        Enum.at([:admin, :online, :offline], rem(i, 3)),
        "n#{rem(i * 7, 997)}"
      )

for w <- 1..1_000_000, do: MemberList.watch(list, {rem(w, 9_000), rem(w, 9_000) + div(w, 9_000)})
ref = list.ref

run.(fn ->
  SchedStat.deliver(paths, :watch, fn -> Native.member_list_watch(ref, 0, 5_000) end)
  SchedStat.timed(paths, :unwatch, fn -> Native.member_list_unwatch(ref, 0, 5_000) end)
  snapshot = SchedStat.timed(paths, :snapshot, fn -> Native.member_list_snapshot(ref) end)
  SchedStat.deliver(paths, :put, fn -> Native.member_list_put(ref, 0, :admin, "") end)
  SchedStat.timed(paths, :memory, fn -> Native.member_list_memory(ref) end)
  SchedStat.timed(paths, :size, fn -> Native.member_list_size(snapshot) end)
  SchedStat.report("put reaching 1,000,000 windows, 10,000 members")
end)

canary.(5)

# The worst normal-scheduler stall of each public GuildKit.MemberList function on a
# corpus of hostile sizes (huge ids, sort keys and group ids, huge results, many
# windows, equal but not identical terms).
#
#     MIX_ENV=prod mix run bench/member_list_stalls.exs
#
# Each case builds its input in a fresh process with a large heap, collects the garbage
# of that, then makes the calls while `:erlang.system_monitor/2` watches that process
# for `long_schedule` and `long_gc` of 1 ms or more (the finest the VM reports). A
# function's figure is the longest report over its cases, or "< 1 ms". Monitoring stops
# before the process exits (freeing its heap is no call's work). The load average
# is printed: on a busy machine the OS preempts schedulers and stretches every figure.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.MemberListStalls do
  alias GuildKit.Bench.Harness
  alias GuildKit.MemberList

  def run do
    IO.puts("# GuildKit.MemberList: worst stall per function (load #{Harness.load()})\n")

    results =
      for {function, case_name, setup, call} <- cases() do
        IO.puts(:stderr, "  · #{function}: #{case_name}")
        {function, case_name, worst(setup, call)}
      end

    IO.puts("| function | worst case | worst stall |")
    IO.puts("| --- | --- | --- |")

    results
    |> Enum.group_by(&elem(&1, 0))
    |> Enum.sort()
    |> Enum.each(fn {function, cases} ->
      {_, case_name, ms} = Enum.max_by(cases, &elem(&1, 2))
      IO.puts("| `#{function}` | #{case_name} | #{if ms == 0, do: "< 1 ms", else: "#{ms} ms"} |")
    end)

    IO.puts("\nLoad average after: #{Harness.load()}.")
  end

  defp filled(n, windows \\ []) do
    list = MemberList.new(groups: [:admin, :online, :offline])

    for i <- 1..n//1,
        do:
          MemberList.put(
            list,
            i,
            Enum.at([:admin, :online, :offline], rem(i, 3)),
            "n#{rem(i * 7, 997)}"
          )

    Enum.each(windows, &MemberList.watch(list, &1))
    list
  end

  defp cases do
    huge = fn -> :binary.copy("z", 50_000_000) end
    top = for w <- 0..499, do: {0, 1 + w}

    [
      {"put/4", "50 MB id (refused)", fn -> {filled(1_000), huge.()} end,
       fn {l, h} ->
         try do
           MemberList.put(l, h, :online, "x")
         rescue
           ArgumentError -> :ok
         end
       end},
      {"put/4", "10 MB id shown in 500 windows",
       fn -> {filled(1_000, top), :binary.copy("z", 10_000_000)} end,
       fn {l, h} -> MemberList.put(l, h, :admin, "") end},
      {"put/4", "exactly 2,000 windows", fn -> filled(5_000, for(w <- 1..2_000, do: {w, w})) end,
       &MemberList.put(&1, 0, :admin, "")},
      {"put/4", "100,000 windows",
       fn ->
         filled(5_000, for(w <- 1..100_000, do: {rem(w, 4_000), rem(w, 4_000) + div(w, 4_000)}))
       end, &MemberList.put(&1, 0, :admin, "")},
      {"put/4", "1M windows past the end",
       fn -> filled(1_000, for(w <- 1..1_000_000, do: {2_000_000 + w, 2_000_100 + w})) end,
       fn l -> for i <- 1..100, do: MemberList.put(l, 10_000 + i, :online, "p") end},
      {"put/4", "2 then 2.0, watched", fn -> filled(1_000, [{0, 9}]) end,
       fn l -> MemberList.put(l, 3, :admin, "n21") && MemberList.put(l, 3.0, :admin, "n21") end},
      {"index_of/2", "50 MB id", fn -> {filled(1_000), huge.()} end,
       fn {l, h} -> MemberList.index_of(l, h) end},
      {"index_of/2", "10 MB id", fn -> {filled(1_000), :binary.copy("y", 10_000_000)} end,
       fn {l, h} -> MemberList.index_of(l, h) end},
      {"touch/2", "200,000 windows over the row",
       fn ->
         l = filled(1_000)
         row = MemberList.index_of(l, 500)
         for w <- 1..200_000, do: MemberList.watch(l, {max(row - w, 0), row + w})
         l
       end, &MemberList.touch(&1, 500)},
      {"touch/2", "50 MB id", fn -> {filled(1_000), huge.()} end,
       fn {l, h} -> MemberList.touch(l, h) end},
      {"remove/2", "100,000 windows",
       fn ->
         filled(5_000, for(w <- 1..100_000, do: {rem(w, 4_000), rem(w, 4_000) + div(w, 4_000)}))
       end, &MemberList.remove(&1, 3)},
      {"remove/2", "50 MB id", fn -> {filled(1_000), huge.()} end,
       fn {l, h} -> MemberList.remove(l, h) end},
      {"new/1", "20 group ids of 5 MB",
       fn -> for i <- 1..20, do: :binary.copy(<<i>>, 5_000_000) end, &MemberList.new(groups: &1)},
      {"new/1", "2,000 groups of 2,000-integer lists",
       fn -> for i <- 1..2_000, do: Enum.to_list(i..(i + 1_999)) end,
       &MemberList.new(groups: &1)},
      {"rows/3", "256 rows of 200 KB ids", &big_rows/0, &MemberList.rows(&1, 0, 256)},
      {"rows/3", "1,000,000 rows", fn -> filled(1_000_000) end,
       &MemberList.rows(&1, 0, 2_000_000)},
      {"watch/2", "256 rows of 200 KB ids", &big_rows/0, &MemberList.watch(&1, {1, 256})},
      {"watch/2", "1,000,000 rows", fn -> filled(1_000_000) end,
       &MemberList.watch(&1, {0, 999_999})},
      {"unwatch/2", "1,000,000 windows",
       fn -> filled(1_000, for(w <- 1..1_000_000, do: {w, w + 9})) end,
       fn l -> for w <- 1..1_000, do: MemberList.unwatch(l, {w, w + 9}) end},
      {"groups/1", "40 group ids of 1 MB",
       fn ->
         groups = for i <- 1..40, do: :binary.copy(<<i>>, 1_000_000)
         l = MemberList.new(groups: groups)
         for {g, i} <- Enum.with_index(groups), do: MemberList.put(l, i, g, "x")
         l
       end, &MemberList.groups/1},
      {"groups/1", "65,535 groups",
       fn ->
         l = MemberList.new(groups: for(i <- 1..65_535, do: {:role, i}))
         for i <- 1..65_535//3, do: MemberList.put(l, i, {:role, i}, "x")
         l
       end, &MemberList.groups/1},
      {"size/1", "1,000,000 members", fn -> filled(1_000_000) end, &MemberList.size/1},
      {"member_count/1", "1,000,000 members", fn -> filled(1_000_000) end,
       &MemberList.member_count/1},
      {"memory/1", "1,000,000 members", fn -> filled(1_000_000) end, &MemberList.memory/1},
      {"snapshot/1", "1,000,000 members", fn -> filled(1_000_000) end,
       fn l -> for _ <- 1..100, do: MemberList.snapshot(l) end}
    ]
  end

  defp big_rows do
    l = MemberList.new(groups: [:online])
    for i <- 1..256, do: MemberList.put(l, :binary.copy(<<i>>, 200_000), :online, i)
    l
  end

  # The longest long_schedule or long_gc (ms) of the process making the calls.
  defp worst(setup, call) do
    parent = self()

    {pid, ref} =
      :erlang.spawn_opt(
        fn ->
          input = setup.()
          :erlang.garbage_collect()
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)
          call.(input)
          send(parent, {:done, self()})
          receive do: (:exit -> :ok)
        end,
        [:monitor, min_heap_size: 60_000_000]
      )

    receive do: ({:ready, ^pid} -> :ok)
    :erlang.system_monitor(self(), long_schedule: 1, long_gc: 1)
    flush()
    send(pid, :go)
    receive do: ({:done, ^pid} -> :ok)
    # The last report comes when the process is scheduled out, waiting for :exit; its
    # exit (freeing a big heap) is not part of any call.
    Process.sleep(20)
    :erlang.system_monitor(:undefined)
    send(pid, :exit)
    receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
    collect(pid, 0)
  end

  defp flush do
    receive do
      {:monitor, _, _, _} -> flush()
    after
      0 -> :ok
    end
  end

  defp collect(pid, worst) do
    receive do
      {:monitor, ^pid, _, info} -> collect(pid, max(worst, info[:timeout]))
      {:monitor, _, _, _} -> collect(pid, worst)
    after
      0 -> worst
    end
  end
end

GuildKit.Bench.MemberListStalls.run()

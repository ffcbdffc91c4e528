# Moving a guild's member data: dumps and loads against rebuilding, in the same run.
#
#     MIX_ENV=prod mix run bench/handoff.exs [MEMBERS]        (default: 1000000)
#
# SortedSet: members {integer, 8-byte binary}. `to_binary/1` and `from_binary/1` against
# `to_list/1` + `from_enumerable/1`, and against `:erlang.term_to_binary/1` and
# `:erlang.binary_to_term/1` of the list. MemberList (when it has `to_binary/1`): 1M
# members in 12 groups against rebuilding it with one `put/4` per member, and
# `snapshot/1` with the first write after it (when it has `snapshot/1`), beside a put
# with no snapshot taken, 20 of each per round.
#
# Method: rounds interleave every operation, so load changes hit all alike; each row is
# the median over the rounds. The load average is printed before and after: the
# machine is shared, and figures taken under load are provisional.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.Handoff do
  alias GuildKit.Bench.Harness
  alias GuildKit.{MemberList, SortedSet}

  @rounds 7
  @rebuild_rounds 3
  @snapshot_pairs 20
  @groups for(r <- 1..10, do: {:role, r}) ++ [:online, :offline]

  def run(n) do
    IO.puts("# Hand-off: dumps and loads · #{Harness.machine()}\n")
    IO.puts("Load average before: #{Harness.load()} (`#{uptime()}`)\n")
    Harness.in_big_process(fn -> sorted_set(n) end, 200_000_000) |> table("SortedSet", n)

    if member_list_dumps?() do
      Harness.in_big_process(fn -> member_list(n) end, 200_000_000) |> table("MemberList", n)
    else
      IO.puts("MemberList.to_binary/1 is not available in this build: skipped.\n")
    end

    IO.puts("Load average after: #{Harness.load()}")
  end

  defp member_list_dumps?,
    do: Code.ensure_loaded?(MemberList) and function_exported?(MemberList, :to_binary, 1)

  defp sorted_set(n) do
    :rand.seed(:exsss, {n, 17, 31})
    members = for i <- 1..n, do: {i * 4, <<:rand.uniform(0xFFFF_FFFF_FFFF_FFFF)::64>>}
    set = SortedSet.from_proper_enumerable(members)
    dump = SortedSet.to_binary(set)
    ttb = :erlang.term_to_binary(members)
    ^members = SortedSet.to_list(SortedSet.from_binary(dump))

    rounds =
      for _ <- 1..@rounds do
        :erlang.garbage_collect()

        [
          {"to_binary/1", time(fn -> SortedSet.to_binary(set) end)},
          {"from_binary/1", time(fn -> SortedSet.from_binary(dump) end)},
          {"to_list/1", time(fn -> SortedSet.to_list(set) end)},
          {"from_enumerable/1 (of the list)", time(fn -> SortedSet.from_enumerable(members) end)},
          {":erlang.term_to_binary/1 (of the list)",
           time(fn -> :erlang.term_to_binary(members) end)},
          {":erlang.binary_to_term/1", time(fn -> :erlang.binary_to_term(ttb) end)}
        ]
      end

    sizes = [
      {"dump bytes per member", byte_size(dump) / n},
      {"term_to_binary bytes per member", byte_size(ttb) / n}
    ]

    {medians(rounds), sizes,
     [
       {"dump + load", ["to_binary/1", "from_binary/1"]},
       {"to_list + from_enumerable", ["to_list/1", "from_enumerable/1 (of the list)"]},
       {"term_to_binary + binary_to_term",
        [":erlang.term_to_binary/1 (of the list)", ":erlang.binary_to_term/1"]}
     ]}
  end

  defp member_list(n) do
    :rand.seed(:exsss, {n, 3, 5})
    people = for id <- 1..n, do: {100_000_000_000_000_000 + id * 7_919, group(), name()}
    list = MemberList.new(groups: @groups)
    for {id, g, name} <- people, do: MemberList.put(list, id, g, name)
    # Watched windows travel with the list.
    for w <- 0..999, do: MemberList.watch(list, {w * 100, w * 100 + 99})
    dump = MemberList.to_binary(list)

    rounds =
      for round <- 1..@rounds do
        :erlang.garbage_collect()

        rebuild =
          if round <= @rebuild_rounds do
            [
              {"rebuild with put/4",
               time(fn ->
                 fresh = MemberList.new(groups: @groups)
                 for {id, g, name} <- people, do: MemberList.put(fresh, id, g, name)
               end)}
            ]
          else
            []
          end

        [
          {"to_binary/1", time(fn -> MemberList.to_binary(list) end)},
          {"from_binary/1", time(fn -> MemberList.from_binary(dump) end)}
        ] ++ snapshot_rounds(list, people) ++ rebuild
      end

    {medians(rounds), [{"dump bytes per member", byte_size(dump) / n}], []}
  end

  # Each pair is a put with no snapshot alive, then a snapshot and the first put after
  # it, on random members: one sample each from a single cold round was noise, so a
  # round takes `@snapshot_pairs` of each, and the row is the median of them all. The
  # snapshot is taken in a process of its own, so that it is freed when that process
  # exits rather than at some later collection, and the next plain put shares nothing.
  defp snapshot_rounds(list, people) do
    if function_exported?(MemberList, :snapshot, 1) do
      people = List.to_tuple(people)

      for _ <- 1..@snapshot_pairs do
        {id, _g, name} = elem(people, :rand.uniform(tuple_size(people)) - 1)
        plain_ns = time(fn -> MemberList.put(list, id, group(), name) end)
        {snapshot_ns, write_ns} = snapshot_then_put(list, id, name)

        [
          {"put/4, no snapshot alive", plain_ns},
          {"snapshot/1", snapshot_ns},
          {"first put/4 after a snapshot", write_ns}
        ]
      end
    else
      []
    end
  end

  defp snapshot_then_put(list, id, name) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        snapshot_ns = time(fn -> MemberList.snapshot(list) end)
        kept = MemberList.snapshot(list)
        write_ns = time(fn -> MemberList.put(list, id, group(), name) end)
        # Alive until the write is timed, so the write finds its nodes shared.
        _ = MemberList.size(kept)
        send(parent, {self(), snapshot_ns, write_ns})
      end)

    receive do
      {^pid, snapshot_ns, write_ns} ->
        receive do
          {:DOWN, ^ref, :process, ^pid, :normal} -> {snapshot_ns, write_ns}
        end
    end
  end

  defp group do
    case :rand.uniform(100) do
      r when r <= 5 -> Enum.random(Enum.take(@groups, 10))
      r when r <= 35 -> :online
      _ -> :offline
    end
  end

  defp name, do: for(_ <- 1..8, into: "", do: <<Enum.random(?a..?z)>>)

  defp time(fun) do
    t0 = :erlang.monotonic_time(:nanosecond)
    fun.()
    :erlang.monotonic_time(:nanosecond) - t0
  end

  defp medians(rounds) do
    rounds
    |> List.flatten()
    |> Enum.group_by(&elem(&1, 0), &elem(&1, 1))
    |> Map.new(fn {name, samples} -> {name, Harness.stats(samples).median} end)
  end

  defp table({medians, sizes, sums}, what, n) do
    IO.puts("## #{what}, #{n} members, medians of #{@rounds} interleaved rounds\n")

    rows =
      for {name, ns} <- Enum.sort_by(medians, &elem(&1, 1)), do: [name, Harness.format_ns(ns)]

    sum_rows =
      for {name, parts} <- sums,
          do: [name, Harness.format_ns(Enum.sum(Enum.map(parts, &medians[&1])))]

    size_rows = for {name, value} <- sizes, do: [name, Float.round(value, 1)]
    Harness.table(["operation", "median"], rows ++ sum_rows ++ size_rows)
    IO.puts("")
  end

  defp uptime, do: :os.cmd(~c"uptime") |> to_string() |> String.trim()
end

n =
  case System.argv() do
    [n | _] -> String.to_integer(n)
    [] -> 1_000_000
  end

GuildKit.Bench.Handoff.run(n)

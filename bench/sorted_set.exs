# GuildKit.SortedSet against :gb_sets and a sorted list, in the same run.
#
#     MIX_ENV=prod mix run bench/sorted_set.exs [SIZE ...]
#
# Members are {integer, 8-byte binary}, as in a member list keyed by id and tag.
# Every latency is one call made from Elixir, median and p99 over many calls.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.SortedSet do
  alias GuildKit.Bench.Harness
  alias GuildKit.SortedSet

  @samples 20_000

  def run(sizes) do
    IO.puts("# GuildKit.SortedSet · #{Harness.machine()}\n")
    overhead = Harness.repeat(100_000, fn -> :ok end)

    IO.puts(
      "Timing overhead of one empty measured call: #{Harness.format_ns(overhead.median)} (included below).\n"
    )

    for n <- sizes do
      {rows, memory} = Harness.in_big_process(fn -> measure(n) end)
      IO.puts("## #{n} members\n")

      Harness.table(
        [
          "operation",
          "GuildKit median",
          "GuildKit p99",
          "baseline",
          "baseline median",
          "baseline p99",
          "speed-up (median)"
        ],
        rows
      )

      IO.puts(
        "\nNative memory: #{memory.bulk} bytes/member built with from_enumerable, #{memory.one_by_one} bytes/member built by random adds.\n"
      )
    end
  end

  defp measure(n) do
    :rand.seed(:exsss, {n, 17, 31})
    members = for i <- 1..n, do: {i * 4, <<:rand.uniform(0xFFFF_FFFF_FFFF_FFFF)::64>>}
    shuffled = Enum.shuffle(members)
    fresh = fn id -> {id, <<:rand.uniform(0xFFFF_FFFF_FFFF_FFFF)::64>>} end

    from_enum = Harness.repeat(3, fn -> SortedSet.from_enumerable(shuffled) end)
    gb_from = Harness.repeat(3, fn -> :gb_sets.from_list(shuffled) end)
    set = SortedSet.from_enumerable(shuffled)
    gb = :gb_sets.from_list(shuffled)
    sorted = :gb_sets.to_list(gb)
    by_index = List.to_tuple(sorted)

    bulk_bytes = SortedSet.memory(set) / n
    one_by_one = SortedSet.new()
    Enum.each(shuffled, &SortedSet.add(one_by_one, &1))
    one_by_one_bytes = SortedSet.memory(one_by_one) / n

    random_new =
      Enum.uniq(for _ <- 1..@samples, do: fresh.(:rand.uniform(n) * 4 + :rand.uniform(3)))

    at_start = for i <- 1..@samples, do: fresh.(-i)
    at_end = for i <- 1..@samples, do: fresh.(4 * n + 4 * i)
    present = for _ <- 1..@samples, do: elem(by_index, :rand.uniform(n) - 1)
    indices = for _ <- 1..@samples, do: :rand.uniform(n) - 1
    starts = for _ <- 1..div(@samples, 4), do: :rand.uniform(n) - 1
    # O(n) baselines get fewer samples, or a 1M run would take minutes.
    few = max(30, div(2_000_000, n))

    add_random = Harness.per_call(random_new, &SortedSet.add(set, &1))
    remove = Harness.per_call(random_new, &SortedSet.remove(set, &1))
    {gb_add_random, gb_grown} = Harness.per_call_threaded(random_new, gb, &:gb_sets.add/2)
    {gb_remove, _} = Harness.per_call_threaded(random_new, gb_grown, &:gb_sets.delete/2)

    add_start = Harness.per_call(at_start, &SortedSet.add(set, &1))
    Enum.each(at_start, &SortedSet.remove(set, &1))
    {gb_add_start, _} = Harness.per_call_threaded(at_start, gb, &:gb_sets.add/2)

    add_end = Harness.per_call(at_end, &SortedSet.add(set, &1))
    Enum.each(at_end, &SortedSet.remove(set, &1))
    {gb_add_end, _} = Harness.per_call_threaded(at_end, gb, &:gb_sets.add/2)

    member = Harness.per_call(present, &SortedSet.member?(set, &1))
    gb_member = Harness.per_call(present, &:gb_sets.is_member(&1, gb))

    find_index = Harness.per_call(present, &SortedSet.find_index(set, &1))

    list_find_index =
      Harness.per_call(Enum.take(present, few), fn m -> Enum.find_index(sorted, &(&1 == m)) end)

    at = Harness.per_call(indices, &SortedSet.at(set, &1))
    list_at = Harness.per_call(Enum.take(indices, few), &Enum.at(sorted, &1))

    slice = Harness.per_call(starts, &SortedSet.slice(set, &1, 100))
    list_slice = Harness.per_call(Enum.take(starts, few), &Enum.slice(sorted, &1, 100))

    snapshot = Harness.repeat(2_000, fn -> SortedSet.snapshot(set) end)
    gb_snapshot = Harness.repeat(2_000, fn -> gb end)
    to_list = Harness.repeat(5, fn -> SortedSet.to_list(set) end)
    gb_to_list = Harness.repeat(5, fn -> :gb_sets.to_list(gb) end)

    rows = [
      row("add, random position", add_random, ":gb_sets.add", gb_add_random),
      row("add, at start", add_start, ":gb_sets.add", gb_add_start),
      row("add, at end", add_end, ":gb_sets.add", gb_add_end),
      row("remove", remove, ":gb_sets.delete", gb_remove),
      row("member?", member, ":gb_sets.is_member", gb_member),
      row("find_index", find_index, "sorted list + Enum.find_index", list_find_index),
      row("at", at, "sorted list + Enum.at", list_at),
      row("slice of 100", slice, "sorted list + Enum.slice", list_slice),
      row("snapshot", snapshot, "(an immutable value: free)", gb_snapshot),
      row("to_list", to_list, ":gb_sets.to_list", gb_to_list),
      row("from_enumerable (shuffled)", from_enum, ":gb_sets.from_list", gb_from)
    ]

    {rows, %{bulk: Float.round(bulk_bytes, 1), one_by_one: Float.round(one_by_one_bytes, 1)}}
  end

  defp row(name, ours, baseline_name, baseline) do
    [
      name,
      Harness.format_ns(ours.median),
      Harness.format_ns(ours.p99),
      baseline_name,
      Harness.format_ns(baseline.median),
      Harness.format_ns(baseline.p99),
      "#{Float.round(baseline.median / ours.median, 1)}×"
    ]
  end
end

sizes =
  case System.argv() do
    [] -> [10_000, 100_000, 1_000_000]
    args -> Enum.map(args, &String.to_integer/1)
  end

GuildKit.Bench.SortedSet.run(sizes)

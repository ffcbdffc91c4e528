# GuildKit.SortedSet against :gb_sets, in the same run, with the floor of a NIF call.
#
#     MIX_ENV=prod mix run bench/sorted_set.exs [SIZE ...]      (default: 1000000)
#
# Members are {integer, 8-byte binary}, as in a member list keyed by id and tag.
#
# Method (issue 13): every figure is the mean time of one call over a batch of calls,
# and batches of GuildKit and of its baseline alternate, round after round, so that
# load changes hit both alike. Each row reports the median over the rounds and the
# median of the per-round ratios. The load average is printed before and after: the
# machine is shared, and figures taken under load are provisional.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.SortedSet do
  alias GuildKit.Bench.Harness
  alias GuildKit.SortedSet

  @rounds 9
  @batch 20_000

  def run(sizes) do
    IO.puts("# GuildKit.SortedSet · #{Harness.machine()}\n")
    IO.puts("Load average before: #{Harness.load()}\n")

    for n <- sizes do
      rows = Harness.in_big_process(fn -> measure(n) end)
      IO.puts("## #{n} members, #{@rounds} interleaved rounds of #{@batch} calls\n")

      Harness.table(
        ["operation", "GuildKit", "baseline", "baseline time", "ratio (baseline / GuildKit)"],
        rows
      )

      IO.puts("")
    end

    IO.puts("Load average after: #{Harness.load()}")
  end

  defp measure(n) do
    :rand.seed(:exsss, {n, 17, 31})
    members = for i <- 1..n, do: {i * 4, <<:rand.uniform(0xFFFF_FFFF_FFFF_FFFF)::64>>}
    set = SortedSet.from_proper_enumerable(members)
    gb = :gb_sets.from_ordset(members)
    by_index = List.to_tuple(members)
    nils = List.duplicate(nil, @batch)

    # Fresh members go between existing ones (ids 4i + 1..3).
    fresh = fn ->
      Enum.uniq(for _ <- 1..@batch, do: {:rand.uniform(n) * 4 + :rand.uniform(3), <<0::64>>})
    end

    present = fn -> for _ <- 1..@batch, do: elem(by_index, :rand.uniform(n) - 1) end
    indices = fn -> for _ <- 1..@batch, do: :rand.uniform(n) - 1 end

    # Each case: the inputs of a round and the baseline's starting state, GuildKit's
    # call, the baseline's call (threading its state: gb_sets are values), and what
    # undoes the round (untimed), so that every round starts from the same set.
    cases = [
      {"empty NIF call (native_memory/0)", "empty Elixir call", fn -> {nils, nil} end,
       fn _ -> GuildKit.native_memory() end, fn _, s -> empty(s) end, nil},
      {"size/1", "empty NIF call", fn -> {nils, nil} end, fn _ -> SortedSet.size(set) end,
       fn _, s -> GuildKit.native_memory() && s end, nil},
      {"add, random position", ":gb_sets.add", fn -> {fresh.(), gb} end, &SortedSet.add(set, &1),
       &:gb_sets.add/2, &Enum.each(&1, fn x -> SortedSet.remove(set, x) end)},
      {"remove", ":gb_sets.delete",
       fn ->
         added = fresh.()
         Enum.each(added, &SortedSet.add(set, &1))
         {added, Enum.reduce(added, gb, &:gb_sets.add/2)}
       end, &SortedSet.remove(set, &1), &:gb_sets.delete/2, nil},
      {"find_index", ":gb_sets.is_member", fn -> {present.(), gb} end,
       &SortedSet.find_index(set, &1), &(:gb_sets.is_member(&1, &2) && &2), nil},
      # One member (below: one index) over and over: its path through the tree stays in
      # the caches, so the gap to the random row is what the cache misses cost.
      {"find_index, one member again and again", ":gb_sets.is_member, the same",
       fn -> {List.duplicate(elem(by_index, div(n, 2)), @batch), gb} end,
       &SortedSet.find_index(set, &1), &(:gb_sets.is_member(&1, &2) && &2), nil},
      {"member?", ":gb_sets.is_member", fn -> {present.(), gb} end, &SortedSet.member?(set, &1),
       &(:gb_sets.is_member(&1, &2) && &2), nil},
      {"at", "size/1", fn -> {indices.(), nil} end, &SortedSet.at(set, &1),
       fn _, s -> SortedSet.size(set) && s end, nil},
      {"at, one index again and again", "size/1",
       fn -> {List.duplicate(div(n, 2), @batch), nil} end, &SortedSet.at(set, &1),
       fn _, s -> SortedSet.size(set) && s end, nil},
      {"slice of 100", "size/1", fn -> {indices.(), nil} end, &SortedSet.slice(set, &1, 100),
       fn _, s -> SortedSet.size(set) && s end, nil}
    ]

    Enum.map(cases, &measure_case/1) ++
      [
        measure_to_list(set, ":gb_sets.to_list", fn -> :gb_sets.to_list(gb) end),
        measure_to_list(set, "Erlang rebuilding each member", fn -> rebuild(members) end)
      ]
  end

  defp empty(state), do: state

  # Times GuildKit and the baseline on the same inputs, alternating which goes first.
  defp measure_case({name, baseline_name, prepare, ours, baseline, undo}) do
    samples =
      for round <- 1..@rounds do
        {inputs, state} = prepare.()
        ours_run = fn -> per_call(inputs, fn -> each(inputs, ours) end) end
        base_run = fn -> per_call(inputs, fn -> thread(inputs, baseline, state) end) end

        sample =
          if rem(round, 2) == 0 do
            o = ours_run.()
            {o, base_run.()}
          else
            b = base_run.()
            {ours_run.(), b}
          end

        if undo, do: undo.(inputs)
        sample
      end

    row(name, baseline_name, samples)
  end

  defp per_call(inputs, run) do
    t0 = :erlang.monotonic_time(:nanosecond)
    run.()
    (:erlang.monotonic_time(:nanosecond) - t0) / length(inputs)
  end

  defp each([], _fun), do: :ok

  defp each([x | rest], fun) do
    fun.(x)
    each(rest, fun)
  end

  defp thread([], _fun, state), do: state
  defp thread([x | rest], fun, state), do: thread(rest, fun, fun.(x, state))

  # Against `:gb_sets.to_list/1`, which conses the members already on the heap, and
  # against Erlang making every member anew from its parts (a tuple, an integer and an
  # 8-byte binary, consed), which is what a list built from native memory must do.
  defp measure_to_list(set, baseline_name, baseline_run) do
    samples =
      for round <- 1..5 do
        ours = fn -> time(fn -> SortedSet.to_list(set) end) end
        base = fn -> time(baseline_run) end
        # Each list is dropped and collected before the next measurement.
        if rem(round, 2) == 0 do
          {o, b} = {ours.(), base.()}
          {o, b}
        else
          b = base.()
          {ours.(), b}
        end
      end

    row("to_list", baseline_name, samples)
  end

  defp rebuild([]), do: []
  defp rebuild([{id, <<bits::64>>} | rest]), do: [{id, <<bits::64>>} | rebuild(rest)]

  defp time(fun) do
    :erlang.garbage_collect()
    t0 = :erlang.monotonic_time(:nanosecond)
    fun.()
    :erlang.monotonic_time(:nanosecond) - t0
  end

  defp row(name, baseline_name, samples) do
    ours = median(Enum.map(samples, &elem(&1, 0)))
    base = median(Enum.map(samples, &elem(&1, 1)))
    ratio = median(Enum.map(samples, fn {o, b} -> b / o end))

    [
      name,
      Harness.format_ns(ours),
      baseline_name,
      Harness.format_ns(base),
      "#{Float.round(ratio, 2)}×"
    ]
  end

  defp median(values) do
    sorted = Enum.sort(values)
    Enum.at(sorted, div(length(sorted), 2))
  end
end

sizes =
  case System.argv() do
    [] -> [1_000_000]
    args -> Enum.map(args, &String.to_integer/1)
  end

GuildKit.Bench.SortedSet.run(sizes)

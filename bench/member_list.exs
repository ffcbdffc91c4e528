# GuildKit.MemberList on a 1,000,000-member sidebar, against the naive approach.
#
#     MIX_ENV=prod mix run bench/member_list.exs [MEMBERS]
#
# 10 hoisted roles (5% of members), online (30%) and offline (65%); 1,000 watched
# 100-row ranges, 500 of them on the ten windows at the top of the list ({0, 99} ...
# {900, 999}). The other 500 are placed two ways, each measured:
#   - scattered: random windows anywhere in the list (users scrolled anywhere);
#   - clustered: random windows in the first 20,000 rows (users scrolled a few pages).
# A presence change moves a random member between online and offline (90%) or to another
# role (10%), and includes computing every range's ops.
#
# The naive approach is what a guild writes without MemberList: a GuildKit.SortedSet of
# {group, name, id}, index_remove and index_add to find the old and new index, then a full
# SYNC (a 100-row slice) of every watched range the move touched.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.MemberList do
  alias GuildKit.Bench.Harness
  alias GuildKit.{MemberList, SortedSet}

  @roles for r <- 1..10, do: {:role, r}
  @groups @roles ++ [:online, :offline]
  @changes 20_000

  def run(members) do
    IO.puts("# GuildKit.MemberList · #{Harness.machine()}\n")
    Harness.in_big_process(fn -> measure(members) end, 100_000_000) |> report(members)
  end

  defp measure(n) do
    :rand.seed(:exsss, {n, 3, 5})
    say("generating #{n} members")
    people = for id <- 1..n, do: {100_000_000_000_000_000 + id * 7_919, group(), name()}
    positions = Map.new(Enum.with_index(@groups))

    say("building the member list")
    list = MemberList.new(groups: @groups)

    {build_us, _} =
      :timer.tc(fn -> for {id, g, name} <- people, do: MemberList.put(list, id, g, name) end)

    say("building the naive sorted set")
    naive = SortedSet.from_enumerable(for {id, g, name} <- people, do: {positions[g], name, id})

    memory = MemberList.memory(list)
    by_id = Map.new(people, fn {id, g, name} -> {id, {g, name}} end)

    scenarios =
      for {scenario, spread} <- [scattered: n, clustered: 20_000] do
        ranges = for(_ <- 1..500, do: top_window()) ++ for(_ <- 1..500, do: random_window(spread))
        Enum.each(ranges, &MemberList.watch(list, &1))
        distinct = ranges |> Enum.uniq() |> Enum.sort()

        say("#{scenario}: timing #{@changes} presence changes")
        moves = presence_changes(people, by_id)

        {put, affected} =
          time_moves(moves, fn {id, _old, {g, name}} -> MemberList.put(list, id, g, name) end)

        say("#{scenario}: timing the naive approach on the same changes")
        naive_stats = time_naive(naive, positions, distinct, moves)

        # Put everyone back and stop watching, so the next scenario starts the same.
        Enum.each(Enum.reverse(moves), fn {id, {g, name}, _} ->
          MemberList.put(list, id, g, name)
        end)

        Enum.each(ranges, &MemberList.unwatch(list, &1))

        {scenario,
         %{put: put, affected: affected, naive: naive_stats, distinct: length(distinct)}}
      end

    say("timing watch of 100-row windows")
    windows = for _ <- 1..5_000, do: random_window(n)
    watch = Harness.per_call(windows, &MemberList.watch(list, &1))
    Enum.each(windows, &MemberList.unwatch(list, &1))

    %{build_us: build_us, memory: memory, scenarios: scenarios, watch: watch}
  end

  # The naive guild: a SortedSet of {group, name, id}, the old and new index from
  # index_remove and index_add, then a full SYNC of every watched range between them.
  defp time_naive(naive, positions, distinct, moves) do
    stats =
      Harness.per_call(moves, fn {id, {og, oname}, {g, name}} ->
        {from, _} = SortedSet.index_remove(naive, {positions[og], oname, id})
        {to, _} = SortedSet.index_add(naive, {positions[g], name, id})
        {low, high} = {min(from, to), max(from, to)}

        for {first, last} <- distinct, first <= high and last >= low do
          SortedSet.slice(naive, first, last - first + 1)
        end
      end)

    Enum.each(Enum.reverse(moves), fn {id, {og, oname}, {g, name}} ->
      SortedSet.remove(naive, {positions[g], name, id})
      SortedSet.add(naive, {positions[og], oname, id})
    end)

    stats
  end

  defp say(message), do: IO.puts(:stderr, "  · " <> message)

  defp group do
    case :rand.uniform(100) do
      r when r <= 5 -> Enum.random(@roles)
      r when r <= 35 -> :online
      _ -> :offline
    end
  end

  @syllables ~w(ka ri to mi na so ha lu en do ra vi ze mo qu ty ar el is on)
  defp name, do: for(_ <- 1..(2 + :rand.uniform(3)), into: "", do: Enum.random(@syllables))

  defp top_window do
    first = (:rand.uniform(10) - 1) * 100
    {first, first + 99}
  end

  defp random_window(n) do
    first = (:rand.uniform(div(n, 100)) - 1) * 100
    {first, first + 99}
  end

  # {id, old {group, name}, new {group, name}}, each valid after the ones before it.
  defp presence_changes(people, by_id) do
    ids = people |> Enum.map(&elem(&1, 0)) |> List.to_tuple()

    {moves, _} =
      Enum.map_reduce(1..@changes, by_id, fn _, by_id ->
        id = elem(ids, :rand.uniform(tuple_size(ids)) - 1)
        {g, name} = old = Map.fetch!(by_id, id)

        new_group =
          case {g, :rand.uniform(10)} do
            {_, 1} -> Enum.random(@roles)
            {:online, _} -> :offline
            {:offline, _} -> :online
            {{:role, _}, _} -> Enum.random([:online, :offline])
          end

        {{id, old, {new_group, name}}, Map.put(by_id, id, {new_group, name})}
      end)

    moves
  end

  defp time_moves(moves, fun) do
    counts = :atomics.new(length(moves), signed: false)

    stats =
      Harness.per_call(Enum.with_index(moves, 1), fn {move, i} ->
        :atomics.put(counts, i, length(fun.(move)))
      end)

    {stats, for(i <- 1..length(moves), do: :atomics.get(counts, i))}
  end

  defp report(r, n) do
    rows =
      Enum.flat_map(r.scenarios, fn {scenario, m} ->
        [
          [
            "#{scenario}: presence change incl. ops, median",
            Harness.format_ns(m.put.median),
            Harness.format_ns(m.naive.median),
            "#{Float.round(m.naive.median / m.put.median, 1)}×"
          ],
          [
            "#{scenario}: presence change incl. ops, p99",
            Harness.format_ns(m.put.p99),
            Harness.format_ns(m.naive.p99),
            "#{Float.round(m.naive.p99 / m.put.p99, 1)}×"
          ]
        ]
      end) ++
        [
          ["watch of a 100-row window, median", Harness.format_ns(r.watch.median), "", ""],
          ["watch of a 100-row window, p99", Harness.format_ns(r.watch.p99), "", ""]
        ]

    Harness.table(["measure", "GuildKit.MemberList", "naive (SortedSet + SYNC)", "ratio"], rows)
    IO.puts("")

    for {scenario, m} <- r.scenarios do
      affected = Enum.sort(m.affected)
      count = length(affected)

      IO.puts(
        "#{scenario}: #{m.distinct} distinct watched ranges (1,000 watches); windows with ops per change: " <>
          "mean #{Float.round(Enum.sum(affected) / count, 1)}, median #{Enum.at(affected, div(count, 2))}, " <>
          "p99 #{Enum.at(affected, div(count * 99, 100))}."
      )
    end

    IO.puts("""
    Native memory: #{Float.round(r.memory / n, 1)} bytes per member (#{n} members).
    Building by #{n} puts: #{div(r.build_us, 1000)} ms.
    """)
  end
end

members =
  case System.argv() do
    [] -> 1_000_000
    [n] -> String.to_integer(n)
  end

GuildKit.Bench.MemberList.run(members)

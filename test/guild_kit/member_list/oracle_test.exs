defmodule GuildKit.MemberList.OracleTest do
  @moduledoc """
  Replica oracle: seeded random puts (new members and moves across groups), touches and
  removes, with watched ranges (overlapping, past the end, added and dropped midway).
  Each range keeps a replica built from `watch/2` and the returned ops. After every step
  every replica is identical (`:erlang.term_to_binary/1`, so `2` is not `2.0` and `0.0`
  is not `-0.0`) to `rows/3` for its range, and the whole list is identical to one
  rebuilt in Elixir from a plain member map.

  Ids, group ids and sort keys are drawn in several equal but not identical forms
  (`1` and `1.0`, `0.0` and `-0.0`, inside tuples and maps): the list treats equal
  terms as one, as `==` does, and must show the id last put.

  The second test uses enough members and windows that results are delivered in many
  chunks. Replay with `GUILD_KIT_SEED=<seed> mix test test/guild_kit/member_list/oracle_test.exs`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.MemberList
  alias GuildKit.Test.TermGenerator

  @groups [{:role, 1}, {:role, 2}, :online, 1.5, 7, "offline"]
  # The last index a window can name.
  @last 0xFFFF_FFFF_FFFF_FFFF

  test "replicas built from watch and ops always equal the list" do
    seed = TermGenerator.seed!("member list oracle")

    ranges =
      for(_ <- 1..30, do: random_range(60, 15)) ++
        [{0, 9}, {0, 9}, {5, 5}, {100, 200}, {0, 1_000}, {0, @last}, {7, @last}, {@last, @last}]

    run(seed, ranges: ranges, ids: 60, steps: 3_000, churn_every: 100)
  end

  @tag :slow
  @tag timeout: 300_000
  test "results delivered in many chunks reach every replica" do
    seed = TermGenerator.seed!("member list chunked oracle")
    # Thousands of windows over a few thousand rows: most changes reach more windows
    # than one chunk holds, and watches of the whole list span many chunks too.
    ranges = for(_ <- 1..4_000, do: random_range(3_000, 20)) ++ [{0, 10_000}]
    run(seed, ranges: ranges, ids: 2_500, steps: 100, churn_every: 25, prefill: 2_000)
  end

  defp run(seed, opts) do
    list = MemberList.new(groups: @groups)

    members =
      Enum.reduce(1..Keyword.get(opts, :prefill, 0)//1, %{}, fn _, members ->
        {members, _, _} = random_change(list, members, opts[:ids], :put)
        members
      end)

    replicas = Enum.map(opts[:ranges], &{&1, MemberList.watch(list, &1)})

    for {range, replica} <- replicas,
        do: assert_identical(replica, window(rebuild(members), range), "seed #{seed}: watch")

    Enum.reduce(1..opts[:steps], {members, replicas}, fn step, {members, replicas} ->
      before = rebuild(members)
      {members, changes, kind} = random_change(list, members, opts[:ids], :any)
      context = "seed #{seed}, step #{step} (#{inspect(kind)})"

      expected = rebuild(members)
      assert_identical(MemberList.rows(list, 0, 100_000), expected, context)
      {before, expected} = {List.to_tuple(before), List.to_tuple(expected)}
      assert MemberList.size(list) == tuple_size(expected), context
      assert MemberList.member_count(list) == map_size(members), context

      check_changes(changes, replicas, context)

      # A range gets an entry only if its rows changed (a touch updates rows in place).
      unless match?({:touch, _}, kind) do
        for {range, _ops} <- changes do
          refute identical?(window(before, range), window(expected, range)),
                 "#{context}: ops for unchanged #{inspect(range)}"
        end
      end

      by_range = Map.new(changes)
      replicas = Enum.map(replicas, &apply_changes(&1, by_range, context))

      for {range, replica} <- replicas do
        assert_identical(
          replica,
          window(expected, range),
          "#{context}: replica of #{inspect(range)}"
        )
      end

      {members, churn_ranges(list, replicas, step, opts[:churn_every])}
    end)
  end

  defp random_range(spread, length) do
    first = :rand.uniform(spread) - 1
    {first, first + :rand.uniform(length) - 1}
  end

  # Members are keyed by the canonical form of their id (equal ids share it); each
  # holds the id last put, its group as configured, and its sort key.
  defp random_change(list, members, ids, which) do
    n = :rand.uniform(ids)
    id = member_id(n)

    case if(which == :put, do: 1, else: :rand.uniform(10)) do
      r when r <= 6 ->
        group = Enum.random(@groups)
        sort_key = sort_key()
        changes = MemberList.put(list, id, equal_form(group), sort_key)
        members = Map.put(members, canonical(id), {id, group, sort_key})
        {members, changes, {:put, id, group, sort_key}}

      r when r <= 8 ->
        {Map.delete(members, canonical(id)), MemberList.remove(list, id), {:remove, id}}

      _ ->
        {members, MemberList.touch(list, id), {:touch, id}}
    end
  end

  # Ids of several types, each in several equal forms.
  defp member_id(n) do
    float = Enum.random([n, n * 1.0])

    case rem(n, 5) do
      0 -> float
      1 -> {:user, float}
      2 -> "user-#{n}"
      3 -> %{id: float, tags: [float]}
      4 -> if(n < 10, do: Enum.random([0, 0.0, TermGenerator.negative_zero()]), else: float)
    end
  end

  defp sort_key do
    Enum.random([
      "amy",
      "bob",
      "cy",
      :atom_name,
      3,
      3.0,
      {"x", 1},
      {"x", 1.0},
      0.0,
      TermGenerator.negative_zero()
    ])
  end

  # A group id equal to `group` but perhaps not identical.
  defp equal_form({:role, n}), do: {:role, Enum.random([n, n * 1.0])}
  defp equal_form(7), do: Enum.random([7, 7.0])
  defp equal_form(group), do: group

  # Equal terms (in the sense of `==`) have one canonical form: integral floats become
  # integers, everywhere but in map keys, which compare exactly.
  defp canonical(f) when is_float(f) and f == trunc(f), do: trunc(f)

  defp canonical(t) when is_tuple(t),
    do: t |> Tuple.to_list() |> Enum.map(&canonical/1) |> List.to_tuple()

  defp canonical(l) when is_list(l), do: Enum.map(l, &canonical/1)
  defp canonical(m) when is_map(m), do: Map.new(m, fn {k, v} -> {k, canonical(v)} end)
  defp canonical(other), do: other

  defp rebuild(members) do
    Enum.flat_map(@groups, fn group ->
      in_group = for {_, {id, ^group, sort_key}} <- members, do: {sort_key, id}

      case Enum.sort(in_group) do
        [] -> []
        sorted -> [{:group, group} | Enum.map(sorted, fn {_, id} -> {:member, id} end)]
      end
    end)
  end

  defp window(rows, range) when is_list(rows), do: window(List.to_tuple(rows), range)

  defp window(rows, {first, last}) do
    last = min(last, tuple_size(rows) - 1)
    if first > last, do: [], else: for(i <- first..last, do: elem(rows, i))
  end

  defp identical?(a, b), do: :erlang.term_to_binary(a) == :erlang.term_to_binary(b)

  # The message is built only on failure: inspecting whole replicas on every check
  # would cost more than the checks.
  defp assert_identical(got, want, context) do
    unless identical?(got, want),
      do: flunk("#{context}: got #{inspect(got)}, want #{inspect(want)}")
  end

  defp check_changes(changes, replicas, context) do
    ranges = Enum.map(changes, &elem(&1, 0))
    assert ranges == Enum.uniq(ranges), "#{context}: a range listed twice"
    assert ranges == Enum.sort(ranges), "#{context}: ranges out of order"
    watched = MapSet.new(replicas, &elem(&1, 0))

    for {{first, last} = range, ops} <- changes do
      assert MapSet.member?(watched, range), "#{context}: unwatched #{inspect(range)}"

      assert ops != [], "#{context}: empty ops for #{inspect(range)}"

      for op <- ops do
        index = elem(op, 1)

        assert index >= first and index <= last,
               "#{context}: #{inspect(op)} outside #{inspect(range)}"
      end
    end
  end

  defp apply_changes({range, replica}, by_range, context) do
    case Map.fetch(by_range, range) do
      :error -> {range, replica}
      {:ok, ops} -> {range, Enum.reduce(ops, replica, &apply_op(&1, &2, range, context))}
    end
  end

  defp apply_op({:insert, index, row}, replica, {first, last}, _context) do
    replica |> List.insert_at(index - first, row) |> Enum.take(last - first + 1)
  end

  defp apply_op({:update, index, row}, replica, {first, _}, context) do
    assert index - first < length(replica), "#{context}: update past the replica"
    List.replace_at(replica, index - first, row)
  end

  defp apply_op({:delete, index}, replica, {first, _}, context) do
    assert index - first < length(replica), "#{context}: delete past the replica"
    List.delete_at(replica, index - first)
  end

  # Every so often drop one watched range and watch a new one, so ranges come and go.
  defp churn_ranges(list, replicas, step, every) when rem(step, every) == 0 do
    [{dropped, _} | kept] = Enum.shuffle(replicas)
    :ok = MemberList.unwatch(list, dropped)
    range = random_range(70, 20)
    [{range, MemberList.watch(list, range)} | kept]
  end

  defp churn_ranges(_list, replicas, _step, _every), do: replicas
end

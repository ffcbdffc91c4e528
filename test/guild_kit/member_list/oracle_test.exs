defmodule GuildKit.MemberList.OracleTest do
  @moduledoc """
  Replica oracle: thousands of seeded random puts (new members and moves across groups),
  touches and removes, with a few dozen watched ranges (overlapping, past the end, added
  and dropped midway). Each range keeps a replica built from `watch/2` and the returned
  ops. After every step every replica equals `rows/3` for its range, and the whole list
  equals one rebuilt in Elixir from a plain member map.

  Replay with `GUILD_KIT_SEED=<seed> mix test test/guild_kit/member_list/oracle_test.exs`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.MemberList
  alias GuildKit.Test.TermGenerator

  @groups [{:role, 1}, {:role, 2}, :online, 1.5, "offline"]
  @steps 3_000

  test "replicas built from watch and ops always equal the list" do
    seed = TermGenerator.seed(TermGenerator.seed_from_env())
    IO.puts("member list oracle seed: #{seed}")
    list = MemberList.new(groups: @groups)

    initial_ranges =
      for _ <- 1..30 do
        first = :rand.uniform(60) - 1
        {first, first + :rand.uniform(15) - 1}
      end ++ [{0, 9}, {0, 9}, {5, 5}, {100, 200}, {0, 1_000}]

    replicas = Enum.map(initial_ranges, &{&1, MemberList.watch(list, &1)})

    Enum.reduce(1..@steps, {%{}, replicas}, fn step, {members, replicas} ->
      before = rebuild(members)
      {members, changes, kind} = random_change(list, members)
      context = "seed #{seed}, step #{step} (#{inspect(kind)})"

      expected = rebuild(members)
      assert MemberList.rows(list, 0, 10_000) == expected, context
      assert MemberList.size(list) == length(expected), context
      assert MemberList.member_count(list) == map_size(members), context

      check_changes(changes, replicas, context)

      # A range gets an entry only if its rows changed (a touch updates rows in place).
      unless match?({:touch, _}, kind) do
        for {range, _ops} <- changes do
          assert window(before, range) != window(expected, range),
                 "#{context}: ops for unchanged #{inspect(range)}"
        end
      end

      replicas = Enum.map(replicas, &apply_changes(&1, changes, context))

      for {range, replica} <- replicas do
        assert replica == window(expected, range), "#{context}: replica of #{inspect(range)}"
      end

      {members, churn_ranges(list, replicas, step)}
    end)
  end

  defp random_change(list, members) do
    id = member_id(:rand.uniform(60))

    case :rand.uniform(10) do
      n when n <= 6 ->
        group = Enum.random(@groups)
        sort_key = Enum.random(["amy", "bob", "cy", "dee", :atom_name, 3, 3.0, {"x", 1}])
        changes = MemberList.put(list, id, group, sort_key)
        {Map.put(members, id, {group, sort_key}), changes, {:put, id, group, sort_key}}

      n when n <= 8 ->
        {Map.delete(members, id), MemberList.remove(list, id), {:remove, id}}

      _ ->
        {members, MemberList.touch(list, id), {:touch, id}}
    end
  end

  # Ids of several types, compared in Erlang term order like everything else.
  defp member_id(n) when rem(n, 3) == 0, do: n
  defp member_id(n) when rem(n, 3) == 1, do: {:user, n}
  defp member_id(n), do: "user-#{n}"

  defp rebuild(members) do
    Enum.flat_map(@groups, fn group ->
      in_group =
        for {id, {^group, sort_key}} <- members do
          {sort_key, id}
        end

      case Enum.sort(in_group) do
        [] -> []
        sorted -> [{:group, group} | Enum.map(sorted, fn {_, id} -> {:member, id} end)]
      end
    end)
  end

  defp window(rows, {first, last}), do: rows |> Enum.drop(first) |> Enum.take(last - first + 1)

  defp check_changes(changes, replicas, context) do
    ranges = Enum.map(changes, &elem(&1, 0))
    assert ranges == Enum.uniq(ranges), "#{context}: a range listed twice"

    for {{first, last} = range, ops} <- changes do
      assert Enum.any?(replicas, &(elem(&1, 0) == range)),
             "#{context}: unwatched #{inspect(range)}"

      assert ops != [], "#{context}: empty ops for #{inspect(range)}"

      for op <- ops do
        index = elem(op, 1)

        assert index >= first and index <= last,
               "#{context}: #{inspect(op)} outside #{inspect(range)}"
      end
    end
  end

  defp apply_changes({range, replica}, changes, context) do
    case List.keyfind(changes, range, 0) do
      nil -> {range, replica}
      {^range, ops} -> {range, Enum.reduce(ops, replica, &apply_op(&1, &2, range, context))}
    end
  end

  defp apply_op({:insert, index, row}, replica, {first, last}, _context) do
    replica |> List.insert_at(index - first, row) |> Enum.take(last - first + 1)
  end

  defp apply_op({:update, index, row}, replica, {first, _}, _context),
    do: List.replace_at(replica, index - first, row)

  defp apply_op({:delete, index}, replica, {first, _}, context) do
    assert index - first < length(replica), "#{context}: delete past the replica"
    List.delete_at(replica, index - first)
  end

  # Every 100 steps drop one watched range and watch a new one, so ranges come and go.
  defp churn_ranges(list, replicas, step) when rem(step, 100) == 0 do
    [{dropped, _} | kept] = Enum.shuffle(replicas)
    :ok = MemberList.unwatch(list, dropped)
    first = :rand.uniform(70) - 1
    range = {first, first + :rand.uniform(20)}
    [{range, MemberList.watch(list, range)} | kept]
  end

  defp churn_ranges(_list, replicas, _step), do: replicas
end

defmodule GuildKit.SortedSet.OracleTest do
  @moduledoc """
  Random add/remove/index_add/index_remove on a GuildKit.SortedSet and on `:gb_sets`
  side by side, comparing everything after every step. Replay a failure with
  `GUILD_KIT_SEED=<seed> mix test test/guild_kit/sorted_set/oracle_test.exs`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet
  alias GuildKit.Test.TermGenerator

  @steps 4_000

  test "matches :gb_sets after every step" do
    seed = TermGenerator.seed!("oracle")

    set = SortedSet.new()

    Enum.reduce(1..@steps, :gb_sets.new(), fn step, oracle ->
      term = TermGenerator.term(2)
      {oracle, expected, actual, op} = apply_random_op(set, oracle, term)

      context = "seed #{seed}, step #{step}: #{op} #{inspect(term, limit: 8)}"
      assert actual == expected, context
      check_same(set, oracle, context)
      oracle
    end)
  end

  defp apply_random_op(set, oracle, term) do
    case :rand.uniform(4) do
      1 ->
        SortedSet.add(set, term)
        {:gb_sets.add(term, oracle), :ok, :ok, :add}

      2 ->
        SortedSet.remove(set, term)
        {:gb_sets.delete_any(term, oracle), :ok, :ok, :remove}

      3 ->
        {index, ^set} = SortedSet.index_add(set, term)
        new_oracle = :gb_sets.add(term, oracle)

        expected = if :gb_sets.is_member(term, oracle), do: nil, else: index_of(new_oracle, term)

        {new_oracle, expected, index, :index_add}

      4 ->
        {index, ^set} = SortedSet.index_remove(set, term)
        expected = if :gb_sets.is_member(term, oracle), do: index_of(oracle, term)
        {:gb_sets.delete_any(term, oracle), expected, index, :index_remove}
    end
  end

  defp check_same(set, oracle, context) do
    list = :gb_sets.to_list(oracle)
    # term_to_binary tells apart what === cannot: 0.0 from -0.0.
    assert :erlang.term_to_binary(SortedSet.to_list(set)) == :erlang.term_to_binary(list), context
    assert SortedSet.size(set) == length(list), context

    unless list == [] do
      probe = Enum.random(list)
      assert SortedSet.find_index(set, probe) == Enum.find_index(list, &(&1 == probe)), context
      index = :rand.uniform(length(list)) - 1

      assert :erlang.term_to_binary(SortedSet.at(set, index)) ==
               :erlang.term_to_binary(Enum.at(list, index)),
             context
    end

    absent = TermGenerator.term(2)

    unless :gb_sets.is_member(absent, oracle) do
      assert SortedSet.find_index(set, absent) == nil, context
    end
  end

  defp index_of(oracle, term), do: Enum.find_index(:gb_sets.to_list(oracle), &(&1 == term))
end

defmodule GuildKit.SortedSet.ToListTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "lists every term in order, small and large" do
    assert SortedSet.to_list(SortedSet.new()) == []
    assert SortedSet.from_enumerable([3, 1, 2]) |> SortedSet.to_list() == [1, 2, 3]

    members = for i <- 1..50_000, do: {rem(i * 7, 101), <<i::64>>}
    assert SortedSet.from_enumerable(members) |> SortedSet.to_list() == Enum.sort(members)
  end

  test "gives back exactly the terms stored" do
    terms = [1, 1.5, -0.0, 2 ** 70, -(2 ** 70), :atom, :日本, "bin\0ary", {1.0, [2, %{3 => 4.0}]}]
    stored = SortedSet.from_enumerable(terms) |> SortedSet.to_list()
    assert :erlang.term_to_binary(stored) == :erlang.term_to_binary(Enum.sort(terms))
  end
end

defmodule GuildKit.SortedSet.AtTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "returns the term at each index" do
    set = SortedSet.from_enumerable(1..10_000)
    for i <- [0, 1, 63, 64, 5_000, 9_999], do: assert(SortedSet.at(set, i) == i + 1)
  end

  test "returns the default past the end, including for huge indices" do
    set = SortedSet.from_enumerable([:a])
    assert SortedSet.at(set, 1) == nil
    assert SortedSet.at(set, 1, :none) == :none
    assert SortedSet.at(set, 2 ** 64, :none) == :none
    assert SortedSet.at(set, 2 ** 200, :none) == :none
    assert SortedSet.at(SortedSet.new(), 0, :empty) == :empty
  end

  test "returns stored nil distinctly from the default" do
    set = SortedSet.from_enumerable([nil])
    assert SortedSet.at(set, 0, :default) == nil
  end

  test "raises ArgumentError for negative or non-integer indices" do
    set = SortedSet.from_enumerable([:a])
    assert_raise ArgumentError, ~r/non-negative integer, got: -1/, fn -> SortedSet.at(set, -1) end
    assert_raise ArgumentError, ~r/got: 1.0/, fn -> SortedSet.at(set, 1.0) end
    assert_raise ArgumentError, ~r/got: :first/, fn -> SortedSet.at(set, :first) end
  end
end

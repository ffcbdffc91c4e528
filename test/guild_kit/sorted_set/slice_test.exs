defmodule GuildKit.SortedSet.SliceTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  setup do
    {:ok, set: SortedSet.from_enumerable(1..1_000)}
  end

  test "returns amount terms from start", %{set: set} do
    assert SortedSet.slice(set, 0, 3) == [1, 2, 3]
    assert SortedSet.slice(set, 500, 100) == Enum.to_list(501..600)
    assert SortedSet.slice(set, 10, 0) == []
  end

  test "returns what exists when the range runs past the end", %{set: set} do
    assert SortedSet.slice(set, 998, 10) == [999, 1_000]
    assert SortedSet.slice(set, 1_000, 10) == []
    assert SortedSet.slice(set, 5_000, 10) == []
  end

  test "a huge amount allocates nothing beyond the set", %{set: set} do
    assert SortedSet.slice(set, 0, 2 ** 44) == Enum.to_list(1..1_000)
    assert SortedSet.slice(set, 999, 2 ** 100) == [1_000]
    assert SortedSet.slice(set, 2 ** 100, 2 ** 100) == []
  end

  test "large slices (dirty scheduler) equal small ones stitched together" do
    set = SortedSet.from_enumerable(1..20_000)
    big = SortedSet.slice(set, 100, 10_000)
    stitched = Enum.flat_map(0..99, &SortedSet.slice(set, 100 + &1 * 100, 100))
    assert big == stitched
    assert big == Enum.to_list(101..10_100)
  end

  test "raises ArgumentError for negative or non-integer bounds", %{set: set} do
    assert_raise ArgumentError, ~r/non-negative integers, got: -1 and 5/, fn ->
      SortedSet.slice(set, -1, 5)
    end

    assert_raise ArgumentError, ~r/got: 0 and -5/, fn -> SortedSet.slice(set, 0, -5) end
    assert_raise ArgumentError, ~r/got: 0 and :all/, fn -> SortedSet.slice(set, 0, :all) end
  end
end

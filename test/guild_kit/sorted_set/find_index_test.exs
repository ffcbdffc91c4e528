defmodule GuildKit.SortedSet.FindIndexTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "find_index/2 returns the rank of present terms and nil otherwise" do
    terms = for i <- 1..3_000, do: {rem(i * 7919, 3_001), "member-#{i}"}
    set = SortedSet.from_enumerable(terms)
    sorted = Enum.sort(terms)

    sorted
    |> Enum.with_index()
    |> Enum.each(fn {term, index} -> assert SortedSet.find_index(set, term) == index end)

    assert SortedSet.find_index(set, {0, "nobody"}) == nil
    assert SortedSet.find_index(set, self()) == nil
  end

  test "find_index/2 and member?/2 use == equality" do
    set = SortedSet.from_enumerable([1, {2, 3.0}])
    assert SortedSet.find_index(set, 1.0) == 0
    assert SortedSet.find_index(set, {2.0, 3}) == 1
    assert SortedSet.member?(set, {2, 3})
    refute SortedSet.member?(set, {2, 4})
    refute SortedSet.member?(set, make_ref())
  end

  test "raises ArgumentError when the first argument is not a set" do
    assert_raise ArgumentError, fn -> SortedSet.find_index(nil, 1) end
    assert_raise ArgumentError, fn -> SortedSet.member?([1], 1) end
  end
end

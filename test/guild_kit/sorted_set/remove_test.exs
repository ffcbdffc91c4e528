defmodule GuildKit.SortedSet.RemoveTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  describe "remove/2" do
    test "removes the term equal to the given one" do
      set = SortedSet.from_enumerable([1, 2, 3])
      assert SortedSet.remove(set, 2.0) == set
      assert SortedSet.to_list(set) == [1, 3]
    end

    test "ignores absent and unsupported terms" do
      set = SortedSet.from_enumerable([1, 2])
      SortedSet.remove(set, 5)
      SortedSet.remove(set, self())
      SortedSet.remove(set, [1 | 2])
      assert SortedSet.to_list(set) == [1, 2]
    end

    test "can empty a large set, in any order" do
      terms = Enum.to_list(1..20_000)
      set = SortedSet.from_enumerable(terms)
      Enum.each(Enum.shuffle(terms), &SortedSet.remove(set, &1))
      assert SortedSet.size(set) == 0
      assert SortedSet.to_list(set) == []
      SortedSet.add(set, :again)
      assert SortedSet.to_list(set) == [:again]
    end
  end

  describe "index_remove/2" do
    test "returns the index the term had" do
      set = SortedSet.from_enumerable([:a, :b, :c, :d])
      assert SortedSet.index_remove(set, :c) == {2, set}
      assert SortedSet.index_remove(set, :a) == {0, set}
      assert SortedSet.to_list(set) == [:b, :d]
    end

    test "returns nil when absent" do
      set = SortedSet.from_enumerable([:a])
      assert SortedSet.index_remove(set, :z) == {nil, set}
      assert SortedSet.index_remove(set, make_ref()) == {nil, set}
    end

    test "indices stay right while the tree shrinks and merges" do
      set = SortedSet.from_enumerable(1..5_000)
      # Removing the smallest each time always reports index 0.
      Enum.each(1..2_500, fn i -> assert SortedSet.index_remove(set, i) == {0, set} end)
      # Removing from the top reports the last index.
      Enum.each(5_000..4_001//-1, fn i ->
        assert SortedSet.index_remove(set, i) == {i - 2_501, set}
      end)

      assert SortedSet.size(set) == 1_500
    end
  end

  test "raises ArgumentError when the first argument is not a set" do
    assert_raise ArgumentError, ~r/expected a GuildKit.SortedSet/, fn ->
      SortedSet.remove(%{}, 1)
    end
  end
end

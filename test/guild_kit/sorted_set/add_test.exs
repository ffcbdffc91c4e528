defmodule GuildKit.SortedSet.AddTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  describe "add/2" do
    test "adds in order and returns the same set" do
      set = SortedSet.new()
      assert SortedSet.add(set, 2) == set
      set |> SortedSet.add(3) |> SortedSet.add(1)
      assert SortedSet.to_list(set) == [1, 2, 3]
    end

    test "ignores a term equal to a present one, keeping the present one" do
      set = SortedSet.new() |> SortedSet.add(1.0) |> SortedSet.add(1)
      assert SortedSet.to_list(set) === [1.0]
      assert SortedSet.size(set) == 1
    end

    test "raises ArgumentError for unsupported terms and leaves the set unchanged" do
      set = SortedSet.from_enumerable([1, 2])
      port = Port.open({:spawn, "true"}, [])

      for {term, kind} <- [
            {self(), "a pid"},
            {make_ref(), "a reference"},
            {port, "a port"},
            {fn -> :ok end, "a fun"},
            {[1 | 2], "an improper list"},
            {<<1::3>>, "a bitstring"},
            {{1, [2, {self()}]}, "a pid"},
            {%{key: make_ref()}, "a reference"}
          ] do
        assert_raise ArgumentError, ~r/unsupported term: #{kind}/, fn ->
          SortedSet.add(set, term)
        end
      end

      assert SortedSet.to_list(set) == [1, 2]
    end

    test "raises ArgumentError when the first argument is not a set" do
      assert_raise ArgumentError, ~r/expected a GuildKit.SortedSet, got: :oops/, fn ->
        SortedSet.add(:oops, 1)
      end
    end
  end

  describe "index_add/2" do
    test "returns the index of the added term" do
      set = SortedSet.from_enumerable([10, 20, 30])
      assert SortedSet.index_add(set, 5) == {0, set}
      assert SortedSet.index_add(set, 25) == {3, set}
      assert SortedSet.index_add(set, 99) == {5, set}
    end

    test "returns nil when an equal term is present" do
      set = SortedSet.from_enumerable([10, 20])
      assert SortedSet.index_add(set, 20) == {nil, set}
      assert SortedSet.index_add(set, 20.0) == {nil, set}
      assert SortedSet.size(set) == 2
    end

    test "returns correct indices through many splits" do
      set = SortedSet.new()
      Enum.each(1..5_000, fn i -> assert SortedSet.index_add(set, i * 2) == {i - 1, set} end)
      # Below 2i + 1 are the evens 2..2i and the odds 3..2i - 1 added before it.
      Enum.each(1..2_000, fn i ->
        assert SortedSet.index_add(set, 2 * i + 1) == {2 * i - 1, set}
      end)
    end
  end
end

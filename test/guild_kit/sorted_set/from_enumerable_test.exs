defmodule GuildKit.SortedSet.FromEnumerableTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  describe "from_enumerable/2" do
    test "sorts and de-duplicates in Erlang term order" do
      terms = [:b, 3, "x", {1}, 1, :a, 3, [], %{}, 2.5]
      set = SortedSet.from_enumerable(terms)
      assert SortedSet.to_list(set) == terms |> Enum.uniq() |> Enum.sort()
    end

    test "keeps the first of terms that compare equal" do
      assert SortedSet.from_enumerable([1.0, 2, 1, 2.0]) |> SortedSet.to_list() === [1.0, 2]
      assert SortedSet.from_enumerable([1, 1.0]) |> SortedSet.to_list() === [1]
    end

    test "accepts any enumerable" do
      assert SortedSet.from_enumerable(5..1//-1) |> SortedSet.to_list() == [1, 2, 3, 4, 5]
      assert SortedSet.from_enumerable(MapSet.new([:x, :y])) |> SortedSet.size() == 2
      assert SortedSet.from_enumerable(%{a: 1}) |> SortedSet.to_list() == [{:a, 1}]
      assert SortedSet.from_enumerable([]) |> SortedSet.size() == 0
    end

    test "builds a large set" do
      terms = Enum.shuffle(1..100_000)
      set = SortedSet.from_enumerable(terms)
      assert SortedSet.size(set) == 100_000
      assert SortedSet.at(set, 0) == 1
      assert SortedSet.at(set, 99_999) == 100_000
      assert SortedSet.find_index(set, 50_000) == 49_999
    end

    test "names the position of an unsupported term" do
      assert_raise ArgumentError, ~r/element at position 2: unsupported term: a pid/, fn ->
        SortedSet.from_enumerable([1, 2, self()])
      end
    end

    test "rejects what is not enumerable, and bad options" do
      assert_raise ArgumentError, ~r/expected an enumerable, got: 42/, fn ->
        SortedSet.from_enumerable(42)
      end

      assert_raise ArgumentError, ~r/unknown keys/, fn ->
        SortedSet.from_enumerable([], foo: 1)
      end
    end
  end

  describe "from_proper_enumerable/2" do
    test "builds from strictly ascending terms" do
      terms = [-1, 0, 1.5, :a, {}, %{}, [], "a"]
      assert SortedSet.from_proper_enumerable(terms) |> SortedSet.to_list() == terms
      assert SortedSet.from_proper_enumerable(1..50_000) |> SortedSet.size() == 50_000
    end

    test "raises on terms out of order or equal, naming the position" do
      assert_raise ArgumentError, ~r/at position 2 is not greater/, fn ->
        SortedSet.from_proper_enumerable([1, 3, 2])
      end

      assert_raise ArgumentError, ~r/at position 1 is not greater/, fn ->
        SortedSet.from_proper_enumerable([1, 1.0])
      end

      assert_raise ArgumentError, ~r/at position 1: unsupported term: a reference/, fn ->
        SortedSet.from_proper_enumerable([1, make_ref()])
      end
    end
  end
end

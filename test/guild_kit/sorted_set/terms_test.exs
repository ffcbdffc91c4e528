defmodule GuildKit.SortedSet.TermsTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet
  alias GuildKit.Test.TermGenerator

  test "every supported type is stored and given back exactly, in gb_sets order" do
    terms = [
      0,
      -1,
      2 ** 64,
      -(2 ** 64),
      2 ** 1000,
      -(2 ** 1000) - 1,
      1.5,
      TermGenerator.negative_zero(),
      5.0e-324,
      1.7976931348623157e308,
      :atom,
      :"",
      :é,
      :日本語,
      :"a\0b",
      "",
      <<0, 0, 255>>,
      <<0xFF, 0xFE>>,
      String.duplicate("x", 1_000),
      binary_part(String.duplicate("y", 200), 10, 100),
      {},
      {1, {2, {3}}},
      [],
      [1, [2, [3]]],
      ~c"charlist",
      %{},
      %{a: 1, b: [2]},
      %{1 => :int, 1.0 => :float},
      Map.new(1..100, &{&1, &1 * 1.0}),
      %{{1, 2} => %{nested: :map}}
    ]

    # 0 and -0.0 are equal: whichever comes first in the shuffle is kept, by both.
    shuffled = Enum.shuffle(terms)
    set = SortedSet.from_enumerable(shuffled)
    expected = :gb_sets.to_list(:gb_sets.from_list(shuffled))
    assert :erlang.term_to_binary(SortedSet.to_list(set)) == :erlang.term_to_binary(expected)
  end

  test "a term nested 100,000 levels deep is stored and read back" do
    deep_tuple = Enum.reduce(1..100_000, :core, fn _, acc -> {acc} end)
    deep_list = Enum.reduce(1..100_000, [], fn _, acc -> [acc] end)
    deep_map = Enum.reduce(1..100_000, %{}, fn i, acc -> %{i => acc} end)
    deep_key = Enum.reduce(1..100_000, :k, fn _, acc -> %{acc => 1} end)

    set = SortedSet.new()

    for deep <- [deep_tuple, deep_list, deep_map, deep_key] do
      SortedSet.add(set, deep)
      assert SortedSet.member?(set, deep)
      index = SortedSet.find_index(set, deep)
      assert SortedSet.at(set, index) === deep
    end

    assert SortedSet.size(set) == 4
    assert SortedSet.to_list(set) === Enum.sort([deep_tuple, deep_list, deep_map, deep_key])
    SortedSet.remove(set, deep_list)
    assert SortedSet.size(set) == 3
  end

  test "large terms go through the dirty-scheduler path and back" do
    big_binary = :rand.bytes(1_000_000)
    long_list = Enum.to_list(1..100_000)
    set = SortedSet.from_enumerable([1, 2])

    assert {2, ^set} = SortedSet.index_add(set, big_binary)
    assert {2, ^set} = SortedSet.index_add(set, long_list)
    assert SortedSet.at(set, 3) == big_binary
    assert SortedSet.find_index(set, long_list) == 2
    assert SortedSet.slice(set, 2, 2) == [long_list, big_binary]
    assert {3, ^set} = SortedSet.index_remove(set, big_binary)
    assert SortedSet.size(set) == 3
  end

  test "a term whose key would exceed 16 MiB is rejected and changes nothing" do
    set = SortedSet.from_enumerable([1])
    huge = :binary.copy(<<0>>, 20_000_000)

    assert_raise ArgumentError, ~r/term too large/, fn -> SortedSet.add(set, huge) end
    assert SortedSet.to_list(set) == [1]
  end

  test "maps compare keys with =:= and integer keys before float keys, like Erlang" do
    maps = [%{1 => :a}, %{1.0 => :a}, %{2 => :a}, %{0.5 => :a}, %{1 => :a, 1.0 => :b}, %{a: 1.0}]
    set = SortedSet.from_enumerable(maps)
    assert SortedSet.to_list(set) === :gb_sets.to_list(:gb_sets.from_list(maps))
    assert SortedSet.size(set) == 6
    assert SortedSet.member?(set, %{a: 1})
  end
end

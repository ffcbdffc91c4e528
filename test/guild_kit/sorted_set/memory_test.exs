defmodule GuildKit.SortedSet.MemoryTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "grows with the members and shrinks when they go" do
    set = SortedSet.new()
    empty = SortedSet.memory(set)
    Enum.each(1..10_000, &SortedSet.add(set, {&1, <<&1::64>>}))
    full = SortedSet.memory(set)
    assert full > empty + 10_000 * 20

    Enum.each(1..10_000, &SortedSet.remove(set, {&1, <<&1::64>>}))
    assert SortedSet.memory(set) < full / 10
  end

  test "stays under 64 bytes per {integer, 8-byte binary} member" do
    members = for i <- 1..100_000, do: {i * 7_919, :rand.bytes(8)}
    bulk = SortedSet.from_enumerable(members)
    assert SortedSet.memory(bulk) / 100_000 < 64

    one_by_one = SortedSet.new()
    Enum.each(Enum.shuffle(members), &SortedSet.add(one_by_one, &1))
    assert SortedSet.memory(one_by_one) / 100_000 < 64
  end
end

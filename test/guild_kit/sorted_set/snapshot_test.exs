defmodule GuildKit.SortedSet.SnapshotTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "later changes to the set do not affect the snapshot" do
    set = SortedSet.from_enumerable(1..10_000)
    snapshot = SortedSet.snapshot(set)
    Enum.each(1..10_000//2, &SortedSet.remove(set, &1))
    SortedSet.add(set, :new)

    assert SortedSet.size(snapshot) == 10_000
    assert SortedSet.to_list(snapshot) == Enum.to_list(1..10_000)
    assert SortedSet.size(set) == 5_001
    assert SortedSet.at(set, 0) == 2
  end

  test "changing a snapshot raises ArgumentError and changes nothing" do
    set = SortedSet.from_enumerable([1, 2])
    snapshot = SortedSet.snapshot(set)

    for change <- [
          fn -> SortedSet.add(snapshot, 3) end,
          fn -> SortedSet.index_add(snapshot, 3) end,
          fn -> SortedSet.remove(snapshot, 1) end,
          fn -> SortedSet.index_remove(snapshot, 1) end,
          fn -> Enum.into([3], snapshot) end
        ] do
      assert_raise ArgumentError, ~r/read-only snapshot/, change
    end

    assert SortedSet.to_list(snapshot) == [1, 2]
    assert SortedSet.to_list(set) == [1, 2]
  end

  test "snapshots are read-only, inspect as such, and are their own snapshot" do
    snapshot = SortedSet.from_enumerable([1]) |> SortedSet.snapshot()
    assert SortedSet.read_only?(snapshot)
    assert inspect(snapshot) == "#GuildKit.SortedSet<size: 1, read_only: true>"
    assert SortedSet.snapshot(snapshot) == snapshot
  end

  test "many snapshots of a changing set each keep their version" do
    set = SortedSet.new()

    snapshots =
      for i <- 1..200 do
        SortedSet.add(set, i)
        {i, SortedSet.snapshot(set)}
      end

    for {i, snapshot} <- snapshots do
      assert SortedSet.to_list(snapshot) == Enum.to_list(1..i)
    end
  end

  test "a snapshot outlives the set it was taken from" do
    snapshot =
      fn -> SortedSet.from_enumerable(1..5_000) |> SortedSet.snapshot() end
      |> Task.async()
      |> Task.await()

    :erlang.garbage_collect()
    assert SortedSet.slice(snapshot, 4_990, 100) == Enum.to_list(4_991..5_000)
  end
end

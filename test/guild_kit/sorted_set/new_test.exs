defmodule GuildKit.SortedSet.NewTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  test "returns an empty, writable set" do
    set = SortedSet.new()
    assert SortedSet.size(set) == 0
    assert SortedSet.to_list(set) == []
    refute SortedSet.read_only?(set)
  end

  test "each call returns an independent set" do
    a = SortedSet.new()
    b = SortedSet.new()
    SortedSet.add(a, 1)
    assert SortedSet.to_list(b) == []
  end

  test "accepts a capacity hint" do
    assert SortedSet.new(capacity: 0) |> SortedSet.size() == 0
    assert SortedSet.new(capacity: 1_000_000) |> SortedSet.size() == 0
  end

  test "rejects unknown and invalid options with ArgumentError" do
    assert_raise ArgumentError, ~r/unknown keys \[:bucket_size\]/, fn ->
      SortedSet.new(bucket_size: 10)
    end

    assert_raise ArgumentError, ~r/:capacity to be a non-negative integer, got: -1/, fn ->
      SortedSet.new(capacity: -1)
    end

    assert_raise ArgumentError, ~r/got: "10"/, fn -> SortedSet.new(capacity: "10") end
    assert_raise ArgumentError, ~r/keyword list, got: 10/, fn -> SortedSet.new(10) end
  end
end

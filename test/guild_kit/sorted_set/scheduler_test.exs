defmodule GuildKit.SortedSet.SchedulerTest do
  @moduledoc """
  Bulk operations on a 1M-member set, and single operations on terms of hostile sizes,
  must never hold a normal scheduler for 5 ms or more: they run on dirty schedulers or
  in bounded chunks. Each is measured on the calling process with both `long_schedule`
  and `long_gc`, so a large result's return into the caller's heap counts too.
  """
  use ExUnit.Case, async: false
  alias GuildKit.SortedSet
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 300_000
  @size 1_000_000

  defp members, do: for(i <- 1..@size, do: {i, <<i::64>>})

  defp assert_no_long_schedule(setup, fun),
    do: LongSchedule.assert_no_long_schedule(setup, fun, watch: [:long_schedule, :long_gc])

  test "from_enumerable and from_proper_enumerable of 1M members" do
    assert assert_no_long_schedule(
             &members/0,
             &(SortedSet.from_enumerable(&1) |> SortedSet.size())
           ) == @size

    assert assert_no_long_schedule(
             &members/0,
             &(SortedSet.from_proper_enumerable(&1) |> SortedSet.size())
           ) == @size
  end

  test "to_list, slices, memory and snapshot of a 1M-member set, results returned" do
    # The set is built, and the heap collected, before the call: what is measured is
    # the call and the arrival of its million-term result in the caller's heap.
    setup = fn ->
      set = SortedSet.from_proper_enumerable(members())
      :erlang.garbage_collect()
      set
    end

    assert assert_no_long_schedule(setup, &length(SortedSet.to_list(&1))) == @size
    assert assert_no_long_schedule(setup, &length(SortedSet.slice(&1, 0, 500_000))) == 500_000
    assert assert_no_long_schedule(setup, &length(SortedSet.slice(&1, 0, @size))) == @size
    assert assert_no_long_schedule(setup, &length(Enum.to_list(&1))) == @size
    assert assert_no_long_schedule(setup, &SortedSet.memory(&1)) > 0
    assert assert_no_long_schedule(setup, &SortedSet.size(SortedSet.snapshot(&1))) == @size
  end

  test "single-member operations on a 1M-member set, many in a row" do
    setup = fn -> SortedSet.from_proper_enumerable(members()) end

    ops = fn set ->
      for i <- 1..20_000 do
        SortedSet.add(set, {i, "new"})
        SortedSet.find_index(set, {i * 50, <<i * 50::64>>})
        SortedSet.at(set, i * 40)
        SortedSet.remove(set, {i, <<i::64>>})
      end

      SortedSet.size(set)
    end

    assert assert_no_long_schedule(setup, ops) == @size
  end

  test "Enum over a 1M-member set" do
    setup = fn -> SortedSet.from_proper_enumerable(members()) end
    assert assert_no_long_schedule(setup, &Enum.count/1) == @size
    assert assert_no_long_schedule(setup, &length(Enum.take(&1, 1_000))) == 1_000
  end

  describe "terms of hostile sizes" do
    test "lookups of terms too large to be stored are absent at once" do
      huge = fn -> :binary.copy(<<0>>, 400_000_000) end
      hundred = fn -> :binary.copy(<<1>>, 100_000_000) end

      refute assert_no_long_schedule(huge, &SortedSet.member?(SortedSet.new(), &1))
      refute assert_no_long_schedule(hundred, &SortedSet.member?(SortedSet.new(), &1))
      refute assert_no_long_schedule(hundred, &SortedSet.member?(SortedSet.new(), [&1]))
      assert assert_no_long_schedule(hundred, &SortedSet.find_index(SortedSet.new(), {&1})) == nil
      set = fn -> {SortedSet.from_enumerable([1]), hundred.()} end

      assert assert_no_long_schedule(set, fn {s, t} -> SortedSet.index_remove(s, t) end)
             |> elem(0) == nil
    end

    test "add and member? of a tuple of 16 x 15 MB binaries" do
      setup = fn -> :binary.copy("x", 15_000_000) |> List.duplicate(16) |> List.to_tuple() end

      assert assert_no_long_schedule(setup, fn tuple ->
               set = SortedSet.new()
               raised = raises?(fn -> SortedSet.add(set, tuple) end)
               {raised, SortedSet.member?(set, tuple), SortedSet.size(set)}
             end) == {true, false, 0}
    end

    test "a 3.75 MB bignum stored, found, read back and removed" do
      setup = fn -> {SortedSet.from_enumerable(1..1_000), Bitwise.bsl(1, 30_000_000) + 1} end

      assert assert_no_long_schedule(setup, fn {set, big} ->
               {index, ^set} = SortedSet.index_add(set, big)
               found = SortedSet.find_index(set, big)
               back = SortedSet.at(set, index)
               {index, found, back === big, SortedSet.index_remove(set, big) |> elem(0)}
             end) == {1_000, 1_000, true, 1_000}
    end

    test "the first write after a snapshot of 100 members of 1 MB each" do
      setup = fn ->
        big = :binary.copy("m", 1_000_000)
        SortedSet.from_enumerable(for i <- 1..100, do: {i, big})
      end

      assert assert_no_long_schedule(setup, fn set ->
               snapshot = SortedSet.snapshot(set)
               SortedSet.add(set, {0, "small"})
               SortedSet.remove(set, {50, :binary.copy("m", 1_000_000)})
               {SortedSet.size(snapshot), SortedSet.size(set)}
             end) == {100, 100}
    end
  end

  defp raises?(fun) do
    fun.()
    false
  rescue
    ArgumentError -> true
  end
end

defmodule GuildKit.SortedSet.SchedulerTest do
  @moduledoc """
  Bulk operations on a 1M-member set must never hold a normal scheduler for 5 ms or
  more: they run on dirty schedulers or in bounded chunks.
  """
  use ExUnit.Case, async: false
  alias GuildKit.SortedSet
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 300_000
  @size 1_000_000

  defp members, do: for(i <- 1..@size, do: {i, <<i::64>>})

  defp assert_no_long_schedule(setup, fun) do
    {result, reports} = LongSchedule.measure(setup, fun, threshold_ms: 5)
    assert reports == [], "normal scheduler held too long: #{inspect(reports)}"
    result
  end

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

  test "to_list, a 1M slice, memory and snapshot of a 1M-member set" do
    setup = fn -> SortedSet.from_proper_enumerable(members()) end
    assert assert_no_long_schedule(setup, &length(SortedSet.to_list(&1))) == @size
    assert assert_no_long_schedule(setup, &length(SortedSet.slice(&1, 0, @size))) == @size
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
end

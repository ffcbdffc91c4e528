defmodule GuildKit.NativeMemoryTest do
  @moduledoc """
  Native memory comes back: creating and dropping 100,000 sets, member lists and
  estimates leaves `GuildKit.native_memory/0` where it started.
  """
  use ExUnit.Case, async: false
  alias GuildKit.{MemberList, MemoryEstimator, SortedSet}
  alias GuildKit.Test.NativeMemory

  @moduletag :slow
  @moduletag timeout: 300_000

  test "GuildKit.native_memory/0 counts what the structures hold" do
    before = NativeMemory.settled()
    set = SortedSet.from_enumerable(1..100_000)
    grown = GuildKit.native_memory()
    assert_in_delta grown - before, SortedSet.memory(set), SortedSet.memory(set) * 0.05
    assert SortedSet.size(set) == 100_000
  end

  test "creating and dropping 100,000 sets and estimates leaves native memory where it started" do
    # One round first, so that per-thread scratch buffers and the reaper thread exist.
    churn(1_000)
    baseline = NativeMemory.settled()

    peak = churn(100_000)

    # Sets of a few thousand members were alive at once: memory did go up.
    assert peak > baseline + 100_000
    left = NativeMemory.await_at_most(baseline + 64 * 1024) - baseline
    assert left <= 64 * 1024, "#{left} bytes still held after the structures were dropped"
  end

  # Builds and drops structures in a process of its own, whose exit frees them all.
  # Returns the highest native memory seen while they were alive.
  defp churn(rounds) do
    task =
      Task.async(fn ->
        estimate_me = Map.new(1..100, &{&1, "value #{&1}"})

        Enum.reduce(1..rounds, 0, fn i, peak ->
          set = SortedSet.from_enumerable([i, {i, "member"}, "x"])
          SortedSet.add(set, {:more, i})
          snapshot = SortedSet.snapshot(set)
          SortedSet.remove(set, i)

          list = MemberList.new(groups: [:online, :offline])
          MemberList.watch(list, {0, 9})
          MemberList.put(list, i, :online, "name")
          MemoryEstimator.estimate(estimate_me, seed: i)

          # A bigger set now and then, freed on the reaper thread.
          big = if rem(i, 20_000) == 0, do: SortedSet.from_enumerable(1..50_000), else: snapshot
          peak = max(peak, GuildKit.native_memory())
          if rem(i, 1_000) == 0, do: :erlang.garbage_collect()
          _ = {big, list}
          peak
        end)
      end)

    Task.await(task, :infinity)
  end
end

defmodule GuildKit.Handoff.DumpSchedulerTest do
  @moduledoc """
  Dumps and loads of a 1M-member structure never hold the caller's normal scheduler
  for 5 ms or more (`long_schedule` and `long_gc` of the calling process, return path
  included): they run on dirty CPU schedulers and return one refcounted binary or a
  handle.
  """
  use ExUnit.Case, async: false
  alias GuildKit.{MemberList, SortedSet}
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 300_000
  @size 1_000_000

  defp assert_no_long_schedule(setup, fun),
    do:
      LongSchedule.assert_no_long_schedule(setup, fun,
        threshold_ms: 5,
        watch: [:long_schedule, :long_gc]
      )

  defp set_setup do
    fn ->
      set = SortedSet.from_proper_enumerable(for i <- 1..@size, do: {i, <<i::64>>})
      :erlang.garbage_collect()
      set
    end
  end

  # Dumping what `setup` builds and loading the dump (which has `size` rows) each hold no
  # normal scheduler; returns the setup of that dump.
  defp assert_dump_and_load(module, setup, size) do
    assert assert_no_long_schedule(setup, &byte_size(module.to_binary(&1))) > @size

    dump_setup = fn ->
      dump = module.to_binary(setup.())
      :erlang.garbage_collect()
      dump
    end

    assert assert_no_long_schedule(dump_setup, &module.size(module.from_binary(&1))) == size
    dump_setup
  end

  test "SortedSet.to_binary and from_binary of 1M members" do
    dump_setup = assert_dump_and_load(SortedSet, set_setup(), @size)

    # A dump that fails its checksum is refused on a dirty scheduler too.
    corrupt = fn ->
      dump = dump_setup.()
      size = byte_size(dump)
      <<head::binary-size(size - 1), last>> = dump
      head <> <<Bitwise.bxor(last, 1)>>
    end

    assert assert_no_long_schedule(corrupt, fn dump ->
             try do
               SortedSet.from_binary(dump)
             rescue
               ArgumentError -> :raised
             end
           end) == :raised
  end

  test "MemberList.to_binary and from_binary of 1M members with 1,000 windows" do
    setup = fn ->
      list = MemberList.new(groups: [{:role, 1}, :online, :offline])

      for i <- 1..@size do
        group = Enum.at([{:role, 1}, :online, :offline], rem(i, 3))
        MemberList.put(list, i, group, <<i::64>>)
      end

      for w <- 0..999, do: MemberList.watch(list, {w * 1000, w * 1000 + 99})
      :erlang.garbage_collect()
      list
    end

    # The size of a list counts its group headers too.
    assert_dump_and_load(MemberList, setup, @size + 3)
  end
end

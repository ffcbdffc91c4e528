defmodule GuildKit.MemberList.ScaleTest do
  @moduledoc """
  A large list: native memory per member, and no normal scheduler held for 5 ms or more
  by big reads, many watched windows, or a stream of changes.
  """
  use ExUnit.Case, async: false
  alias GuildKit.MemberList
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 300_000
  @members 200_000
  @groups [:admin, :mod, :online, :offline]

  defp build do
    list = MemberList.new(groups: @groups)

    for i <- 1..@members do
      MemberList.put(
        list,
        100_000_000_000_000_000 + i * 7_919,
        Enum.at(@groups, rem(i * 31, 4)),
        "name#{rem(i * 7, 9_973)}"
      )
    end

    list
  end

  test "holds a member in under 96 bytes of native memory" do
    list = build()
    assert MemberList.memory(list) / @members < 96
  end

  test "big reads, many windows and streams of changes never hold a normal scheduler" do
    setup = fn ->
      list = build()
      for w <- 0..2_999, do: MemberList.watch(list, {w * 50, w * 50 + 99})
      list
    end

    {rows, reports} =
      LongSchedule.measure(setup, fn list ->
        big = MemberList.rows(list, 0, @members + 10)
        watched = MemberList.watch(list, {0, 50_000})

        for i <- 1..5_000 do
          id = 100_000_000_000_000_000 + i * 7_919
          MemberList.put(list, id, Enum.random(@groups), "renamed#{i}")
          MemberList.touch(list, id)
          MemberList.index_of(list, id)
        end

        {length(big), length(watched)}
      end)

    assert reports == [], "normal scheduler held too long: #{inspect(reports)}"
    assert rows == {@members + length(@groups), 50_001}
  end
end

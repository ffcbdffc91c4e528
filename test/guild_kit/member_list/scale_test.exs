defmodule GuildKit.MemberList.ScaleTest do
  @moduledoc """
  A large list: native memory per member. The scheduler under big reads, many watched
  windows and a stream of changes is checked in `GuildKit.MemberList.HostileTest`.
  """
  use ExUnit.Case, async: false
  alias GuildKit.MemberList

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
end

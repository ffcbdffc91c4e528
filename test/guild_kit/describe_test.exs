defmodule GuildKit.DescribeTest do
  @moduledoc """
  Error messages show the terms they were given, but never print a huge integer in base
  10: that takes seconds in one call that does not yield. Each call below raises about a
  3.75 MB bignum without holding the scheduler.
  """
  use ExUnit.Case, async: false
  alias GuildKit.{Audience, MemberList, Permissions, SortedSet}
  alias GuildKit.Test.LongSchedule

  @moduletag :slow

  test "ArgumentErrors about a huge bignum name its size, at once" do
    huge = Bitwise.bsl(1, 30_000_000) + 12_345

    calls = [
      fn -> SortedSet.at(SortedSet.new(), -huge) end,
      fn -> MemberList.rows(MemberList.new(groups: [:g]), -huge, 1) end,
      fn -> Permissions.new(everyone: huge) end,
      fn -> Audience.select(Audience.new(), Permissions.new(), :all, force: huge) end
    ]

    for call <- calls do
      message =
        LongSchedule.assert_no_long_schedule(fn -> huge end, fn _ ->
          try do
            call.()
            :no_error
          rescue
            error in ArgumentError -> Exception.message(error)
          end
        end)

      assert message =~ "an integer of about 30000"
      assert byte_size(message) < 2_000
    end
  end

  test "other terms are shown as inspect/2 shows them" do
    term = [1, -2.5, "text", :atom, {self(), %{a: [1]}}, Bitwise.bsl(1, 4000)]
    assert GuildKit.Describe.describe(term) == inspect(term)
    assert GuildKit.Describe.describe(Enum.to_list(1..100), limit: 3) == "[1, 2, 3, ...]"
  end
end

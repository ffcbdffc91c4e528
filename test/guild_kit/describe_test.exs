defmodule GuildKit.DescribeTest do
  @moduledoc """
  Error messages show the terms they were given, but never print a huge integer in base
  10: that takes seconds in one call that does not yield. Each call below raises about a
  3.75 MB bignum without holding the scheduler.
  """
  use ExUnit.Case, async: false
  alias GuildKit.{Audience, Fanout, MemberList, MemoryEstimator, Permissions, Relay, SortedSet}
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
      message = message_without_long_schedule(huge, call)
      assert message =~ "an integer of about 30000"
      assert byte_size(message) < 2_000
    end
  end

  test "an option list holding a huge bignum is refused at once, every key named" do
    huge = Bitwise.bsl(1, 30_000_000) + 12_345

    calls = [
      {fn -> SortedSet.new(capacity: 1, bucket: huge) end, "unknown keys [:bucket]"},
      {fn -> MemberList.new(groups: [:g], size: huge) end, "unknown keys [:size]"},
      {fn -> Permissions.new(everyone: 1, everyone: huge) end, "duplicate keys [:everyone]"},
      {fn -> Fanout.send(self(), :x, mode: huge) end, "unknown keys [:mode]"},
      {fn -> MemoryEstimator.estimate(:x, depth: huge) end, "unknown keys [:depth]"},
      {fn -> Relay.child_spec(nmae: huge) end, "unknown keys [:nmae]"},
      {fn -> Audience.select(Audience.new(), Permissions.new(), :all, by: huge) end,
       "unknown keys [:by]"},
      {fn -> SortedSet.new([huge]) end, "expected options to be a keyword list"}
    ]

    for {call, expected} <- calls do
      message = message_without_long_schedule(huge, call)
      assert message =~ expected
      assert message =~ "an integer of about 30000"
      assert byte_size(message) < 2_000
    end
  end

  test "option messages are those of Keyword.validate!/2" do
    for {opts, allowed} <- [
          {[a: 1, b: 2], [:a]},
          {[a: 1, a: 2], [:a, b: 1]},
          {[a: 1, a: 2, c: 3], [:a]},
          {[a: 1], [a: 2, b: 3]}
        ] do
      assert outcome(fn -> GuildKit.Describe.options!(opts, allowed) end) ==
               outcome(fn -> Keyword.validate!(opts, allowed) end)
    end
  end

  test "other terms are shown as inspect/2 shows them" do
    term = [1, -2.5, "text", :atom, {self(), %{a: [1]}}, Bitwise.bsl(1, 4000)]
    assert GuildKit.Describe.describe(term) == inspect(term)
    assert GuildKit.Describe.describe(Enum.to_list(1..100), limit: 3) == "[1, 2, 3, ...]"
  end

  # The message of the ArgumentError the call raises, checking that neither the call nor
  # its error message held the scheduler (the huge term is built before measuring).
  defp message_without_long_schedule(huge, call) do
    LongSchedule.assert_no_long_schedule(fn -> huge end, fn _ ->
      case outcome(call) do
        {:error, message} -> message
        {:ok, result} -> flunk("expected an ArgumentError, got: #{inspect(result, limit: 5)}")
      end
    end)
  end

  defp outcome(call) do
    {:ok, call.()}
  rescue
    error in ArgumentError -> {:error, Exception.message(error)}
  end
end

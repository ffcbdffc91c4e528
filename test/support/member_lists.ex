defmodule GuildKit.Test.MemberLists do
  @moduledoc "Member lists of a given size, for the tests that only need one filled."

  alias GuildKit.MemberList

  @doc """
  A list of members `1..n` spread in turn over the groups `:admin`, `:online` and
  `:offline`, with sort keys `"n0"` to `"n996"` (some shared).
  """
  @spec filled(non_neg_integer()) :: MemberList.t()
  def filled(n) do
    groups = [:admin, :online, :offline]
    list = MemberList.new(groups: groups)

    for i <- 1..n//1,
        do: MemberList.put(list, i, Enum.at(groups, rem(i, 3)), "n#{rem(i * 7, 997)}")

    list
  end
end

defmodule GuildKit.MemberList.DoctestTest do
  use ExUnit.Case, async: true
  doctest GuildKit.MemberList
end

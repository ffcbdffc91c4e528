defmodule GuildKit.SortedSet.DoctestTest do
  use ExUnit.Case, async: true
  doctest GuildKit.SortedSet
end

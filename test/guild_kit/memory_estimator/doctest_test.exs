defmodule GuildKit.MemoryEstimator.DoctestTest do
  use ExUnit.Case, async: true
  doctest GuildKit.MemoryEstimator
end

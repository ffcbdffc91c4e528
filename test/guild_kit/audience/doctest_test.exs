defmodule GuildKit.Audience.DoctestTest do
  use ExUnit.Case, async: true
  doctest GuildKit.Audience
end

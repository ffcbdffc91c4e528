defmodule GuildKit.Relay.DocTest do
  use ExUnit.Case, async: true
  doctest GuildKit.Relay
end

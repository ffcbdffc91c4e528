defmodule GuildKit.Permissions.DoctestTest do
  use ExUnit.Case, async: true
  doctest GuildKit.Permissions
end

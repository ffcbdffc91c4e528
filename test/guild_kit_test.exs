defmodule GuildKitTest do
  use ExUnit.Case, async: true
  doctest GuildKit
end

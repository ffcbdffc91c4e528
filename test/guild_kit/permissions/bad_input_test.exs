defmodule GuildKit.Permissions.BadInputTest do
  @moduledoc """
  Bad input to every public function of `GuildKit.Permissions`: an `ArgumentError` that
  says what was wrong, and the value it was given still exactly as it was.
  """
  use ExUnit.Case, async: true
  alias GuildKit.{Audience, Permissions}

  @too_big 0x1_0000_0000_0000_0000
  @bad_bits [-1, @too_big, 1.0, :view, "1024", nil]

  setup do
    perms =
      Permissions.new(everyone: 0x400, roles: %{mod: 0x800}, owner: :ann)
      |> Permissions.put_channel(:c, [{:role, :mod, 0x4000, 0}])

    %{perms: perms, before: Permissions.to_options(perms)}
  end

  defp unchanged(%{perms: perms, before: before}),
    do: assert(Permissions.to_options(perms) == before)

  test "not a Permissions", context do
    for bad <- [nil, %{}, make_ref(), Audience.new(), {:ref, 1}] do
      for call <- [
            fn -> Permissions.put_role(bad, :r, 1) end,
            fn -> Permissions.delete_role(bad, :r) end,
            fn -> Permissions.put_everyone(bad, 1) end,
            fn -> Permissions.put_owner(bad, :ann) end,
            fn -> Permissions.put_channel(bad, :c, []) end,
            fn -> Permissions.delete_channel(bad, :c) end,
            fn -> Permissions.compute(bad, :ann, []) end,
            fn -> Permissions.compute(bad, :ann, [], :c) end,
            fn -> Permissions.has_channel?(bad, :c) end,
            fn -> Permissions.to_options(bad) end
          ] do
        assert_raise ArgumentError, ~r/expected a GuildKit.Permissions/, call
      end
    end

    # A struct around a reference that is no Permissions value.
    forged = %Permissions{ref: make_ref()}

    assert_raise ArgumentError, ~r/expected a GuildKit.Permissions/, fn ->
      Permissions.compute(forged, :a, [])
    end

    unchanged(context)
  end

  test "bad bits", %{perms: perms} = context do
    for bits <- @bad_bits do
      assert_raise ArgumentError, ~r/0\.\.2\^64-1/, fn ->
        Permissions.put_role(perms, :r, bits)
      end

      assert_raise ArgumentError, ~r/0\.\.2\^64-1/, fn ->
        Permissions.put_everyone(perms, bits)
      end

      assert_raise ArgumentError, ~r/0\.\.2\^64-1/, fn -> Permissions.new(everyone: bits) end
      assert_raise ArgumentError, ~r/role :r/, fn -> Permissions.new(roles: %{r: bits}) end
    end

    unchanged(context)
  end

  test "malformed overwrites", %{perms: perms} = context do
    malformed = [
      {:everyone, 1},
      {:everyone, 1, 2, 3},
      {:role, 1, 2},
      {:member, :ann, -1, 0},
      {:member, :ann, 0, @too_big},
      {:channel, :x, 1, 2},
      {:role, :r, 1.0, 0},
      :everyone,
      [:role, :r, 1, 2],
      %{role: :r}
    ]

    for bad <- malformed do
      assert_raise ArgumentError, ~r/expected overwrite 1 to be/, fn ->
        Permissions.put_channel(perms, :c, [{:everyone, 0, 0}, bad])
      end

      assert_raise ArgumentError, ~r/expected overwrite 0/, fn ->
        Permissions.new(channels: %{c: [bad]})
      end
    end

    for bad <- [:nope, {:everyone, 0, 0}, [{:everyone, 0, 0} | :tail], %{}] do
      assert_raise ArgumentError, ~r/expected overwrites to be a list/, fn ->
        Permissions.put_channel(perms, :c, bad)
      end
    end

    # Ids that cannot be stored.
    for bad <- [self(), make_ref(), fn -> :ok end] do
      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Permissions.put_channel(perms, :c, [{:role, bad, 0, 0}])
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Permissions.put_channel(perms, bad, [])
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Permissions.put_role(perms, bad, 0)
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Permissions.put_owner(perms, bad)
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn -> Permissions.new(owner: bad) end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Permissions.new(roles: %{bad => 1})
      end
    end

    unchanged(context)
  end

  test "bad options", context do
    for bad <- [[colour: 1], [:everyone], %{everyone: 1}, :nope, [{"everyone", 1}]] do
      assert_raise ArgumentError, fn -> Permissions.new(bad) end
    end

    for bad <- [[:a], [{:a, 1} | :tail], {:a, 1}, :roles, [{:a, 1, 2}]] do
      assert_raise ArgumentError, ~r/:roles to be a map/, fn -> Permissions.new(roles: bad) end

      assert_raise ArgumentError, ~r/:channels to be a map/, fn ->
        Permissions.new(channels: bad)
      end
    end

    # Lists of pairs are taken as maps.
    assert Permissions.new(roles: [a: 1, a: 2], channels: [c: []]) |> Permissions.to_options() ==
             [everyone: 0, roles: %{a: 2}, owner: nil, channels: %{c: []}]

    unchanged(context)
  end

  test "bad role id lists and unknown channels", %{perms: perms} = context do
    for bad <- [:mod, {:mod}, "mod", [:mod | :tail]] do
      assert_raise ArgumentError, fn -> Permissions.compute(perms, :bob, bad) end
      assert_raise ArgumentError, fn -> Permissions.compute(perms, :bob, bad, :c) end
    end

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Permissions.compute(perms, :bob, [], :d)
    end

    # Unknown roles and unstorable role or member ids are ignored where they are looked up.
    assert Permissions.compute(perms, self(), [self(), :gone, :mod], :c) == 0x4C00
    assert Permissions.delete_role(perms, self()) |> Permissions.to_options() == context.before
    assert Permissions.delete_channel(perms, :gone) |> Permissions.to_options() == context.before
    refute Permissions.has_channel?(perms, self())
    unchanged(context)
  end
end

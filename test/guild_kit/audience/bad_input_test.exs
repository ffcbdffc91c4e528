defmodule GuildKit.Audience.BadInputTest do
  @moduledoc """
  Bad input to every public function of `GuildKit.Audience`: an `ArgumentError` that
  says what was wrong, and the audience exactly as it was (its sessions, and what its
  selects return).
  """
  use ExUnit.Case, async: true
  alias GuildKit.{Audience, Permissions}

  @too_big 0x1_0000_0000_0000_0000

  setup do
    perms =
      Permissions.new(everyone: 0x400, roles: %{mod: 0})
      |> Permissions.put_channel(:c, [{:role, :mod, 0, 0x400}])

    audience = Audience.new()
    [a, b] = for _ <- 1..2, do: spawn(fn -> receive do: (:never -> :ok) end)
    Audience.add(audience, a, :ann, [:mod], watch: [{0, 99}])
    Audience.add(audience, b, :bob, [], active: false)
    %{audience: audience, perms: perms, pid: a, before: snapshot(audience, perms)}
  end

  defp snapshot(audience, perms) do
    {Audience.to_list(audience), Audience.select(audience, perms, {:channel, :c}, sessions: :all),
     Audience.select(audience, perms, {:window, {0, 99}})}
  end

  defp unchanged(%{audience: audience, perms: perms, before: before}) do
    assert snapshot(audience, perms) == before
  end

  test "not an audience", %{perms: perms} = context do
    for bad <- [nil, %{}, make_ref(), perms, %Audience{ref: make_ref()}] do
      message = ~r/expected a GuildKit.Audience/

      for call <- [
            fn -> Audience.add(bad, self(), :x, []) end,
            fn -> Audience.update(bad, self(), active: true) end,
            fn -> Audience.update_member(bad, :x, []) end,
            fn -> Audience.remove(bad, self()) end,
            fn -> Audience.member?(bad, self()) end,
            fn -> Audience.size(bad) end,
            fn -> Audience.select(bad, perms, :all) end,
            fn -> Audience.count(bad, perms, :all) end,
            fn -> Audience.select_groups(bad, perms, %{c: 1}) end,
            fn -> Audience.to_list(bad) end,
            fn -> Audience.memory(bad) end
          ] do
        assert_raise ArgumentError, message, call
      end
    end

    unchanged(context)
  end

  test "not permissions", %{audience: audience} = context do
    for bad <- [nil, audience, make_ref(), %Permissions{ref: make_ref()}] do
      assert_raise ArgumentError, ~r/expected a GuildKit.Permissions/, fn ->
        Audience.select(audience, bad, :all)
      end

      assert_raise ArgumentError, ~r/expected a GuildKit.Permissions/, fn ->
        Audience.count(audience, bad, :all)
      end

      assert_raise ArgumentError, ~r/expected a GuildKit.Permissions/, fn ->
        Audience.select_groups(audience, bad, %{c: 1})
      end
    end

    unchanged(context)
  end

  test "bad sessions", %{audience: audience, pid: pid} = context do
    for bad <- [:pid, "pid", make_ref(), 1, {pid}] do
      assert_raise ArgumentError, ~r/expected a pid/, fn ->
        Audience.add(audience, bad, :x, [])
      end

      assert_raise ArgumentError, ~r/expected a pid/, fn ->
        Audience.update(audience, bad, active: true)
      end

      assert_raise ArgumentError, ~r/expected a pid/, fn -> Audience.remove(audience, bad) end
      assert_raise ArgumentError, ~r/expected a pid/, fn -> Audience.member?(audience, bad) end
    end

    assert_raise ArgumentError, ~r/already in the audience/, fn ->
      Audience.add(audience, pid, :ann, [])
    end

    assert_raise ArgumentError, ~r/not in the audience/, fn ->
      Audience.update(audience, self(), roles: [:mod])
    end

    unchanged(context)
  end

  test "bad member ids, role ids, flags and windows", %{audience: audience, pid: pid} = context do
    for bad <- [self(), make_ref(), fn -> :ok end] do
      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Audience.add(audience, self(), bad, [])
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Audience.add(audience, self(), :x, [:ok, bad])
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Audience.update(audience, pid, roles: [bad])
      end

      assert_raise ArgumentError, ~r/unsupported term/, fn ->
        Audience.update_member(audience, :ann, [bad])
      end
    end

    for bad <- [:mod, "mod", {:mod}, [:mod | :tail]] do
      assert_raise ArgumentError, fn -> Audience.add(audience, self(), :x, bad) end
      assert_raise ArgumentError, fn -> Audience.update(audience, pid, roles: bad) end
      assert_raise ArgumentError, fn -> Audience.update_member(audience, :ann, bad) end
    end

    for bad <- [[{5, 1}], [{-1, 3}], [{0, @too_big}], [{0.0, 1}], [:w], {0, 9}, [{0, 9} | :tail]] do
      assert_raise ArgumentError, ~r/window/, fn ->
        Audience.add(audience, self(), :x, [], watch: bad)
      end

      # A bad option leaves the good ones undone too.
      assert_raise ArgumentError, ~r/window/, fn ->
        Audience.update(audience, pid, roles: [], active: false, watch: bad)
      end
    end

    for bad <- [1, :yes, "true"] do
      assert_raise ArgumentError, ~r/:active/, fn ->
        Audience.add(audience, self(), :x, [], active: bad)
      end

      assert_raise ArgumentError, ~r/:active/, fn ->
        Audience.update(audience, pid, roles: [], active: bad)
      end
    end

    for bad <- [[colour: :red], [:active], %{active: true}, :active] do
      assert_raise ArgumentError, fn -> Audience.add(audience, self(), :x, [], bad) end
      assert_raise ArgumentError, fn -> Audience.update(audience, pid, bad) end
    end

    refute Audience.member?(audience, self())
    unchanged(context)
  end

  test "bad filters and select options", %{audience: audience, perms: perms} = context do
    filters = [
      nil,
      :channel,
      {:channel},
      {:channel, :c, -1},
      {:channel, :c, @too_big},
      {:channel, :c, 1.0},
      {:window, {9, 0}},
      {:window, 0, 9},
      {:window, :w},
      {:chan, :c},
      [:all]
    ]

    for bad <- filters do
      assert_raise ArgumentError, ~r/expected a (filter|window)/, fn ->
        Audience.select(audience, perms, bad)
      end

      assert_raise ArgumentError, ~r/expected a (filter|window)/, fn ->
        Audience.count(audience, perms, bad)
      end
    end

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.select(audience, perms, {:channel, :d})
    end

    for bad <- [
          [force: :ann],
          [force: [:ann | :tail]],
          [sessions: :some],
          [colour: 1],
          %{force: []},
          :force
        ] do
      assert_raise ArgumentError, fn -> Audience.select(audience, perms, :all, bad) end
      assert_raise ArgumentError, fn -> Audience.count(audience, perms, :all, bad) end
    end

    for bad <- [[sessions: :x], [required: -1], [required: :view], [force: []]] do
      assert_raise ArgumentError, fn -> Audience.select_groups(audience, perms, %{c: 1}, bad) end
    end

    for bad <- [{0, 3}, {2, 2}, {-1, 4}, {0, 128}, {0, 0}, {1.0, 2}, 5, nil] do
      assert_raise ArgumentError, ~r/expected :slice to be \{index, count\}/, fn ->
        Audience.select_groups(audience, perms, %{c: 1}, slice: bad)
      end
    end

    for bad <- [[c: 1], :c, nil] do
      assert_raise ArgumentError, ~r/map of channel_id/, fn ->
        Audience.select_groups(audience, perms, bad)
      end
    end

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.select_groups(audience, perms, %{c: 1, d: 2})
    end

    unchanged(context)
  end
end

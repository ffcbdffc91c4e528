defmodule GuildKit.Audience.ApiTest do
  @moduledoc """
  `GuildKit.Audience` case by case: sessions in and out, slot order, every filter,
  active and passive sessions, mentions, remote pids, role and permission changes seen
  by the next select (the cache is never stale), grouping for passive updates,
  `to_list/1`, the 65,536-session limit and memory.
  """
  use ExUnit.Case, async: true
  import Bitwise
  alias GuildKit.{Audience, Permissions}
  alias GuildKit.Test.FakePids

  @view 0x400
  @send 0x800

  defp pids(n), do: for(_ <- 1..n, do: spawn(fn -> receive do: (:never -> :ok) end))

  setup do
    perms =
      Permissions.new(everyone: @view, roles: %{mod: @send, muted: 0})
      |> Permissions.put_channel(:general, [])
      |> Permissions.put_channel(:mods, [{:everyone, 0, @view}, {:role, :mod, @view, 0}])
      |> Permissions.put_channel(:quiet, [{:role, :muted, 0, @view}])

    %{perms: perms, audience: Audience.new()}
  end

  test "sessions come and go; pids come in slot order", %{audience: audience, perms: perms} do
    [a, b, c, d] = pids(4)
    assert Audience.size(audience) == 0
    :ok = Audience.add(audience, a, :ann, [])
    :ok = Audience.add(audience, b, :bob, [:mod])
    :ok = Audience.add(audience, c, :cy, [])
    assert Audience.size(audience) == 3
    assert Audience.select(audience, perms, :all) == [a, b, c]

    :ok = Audience.remove(audience, b)
    :ok = Audience.remove(audience, b)
    refute Audience.member?(audience, b)
    assert Audience.select(audience, perms, :all) == [a, c]

    # A new session takes the freed slot; the others keep theirs.
    :ok = Audience.add(audience, d, :dee, [])
    assert Audience.select(audience, perms, :all) == [a, d, c]
    assert Enum.map(Audience.to_list(audience), & &1.pid) == [a, d, c]

    assert_raise ArgumentError, ~r/already in the audience/, fn ->
      Audience.add(audience, a, :ann, [])
    end

    assert inspect(audience) == "#GuildKit.Audience<sessions: 3>"
  end

  test "channel filters, required bits, windows", %{audience: audience, perms: perms} do
    [ann, bob, cy] = pids(3)
    Audience.add(audience, ann, :ann, [], watch: [{0, 99}])
    Audience.add(audience, bob, :bob, [:mod], watch: [{0, 99}, {100, 199}])
    Audience.add(audience, cy, :cy, [:muted])

    assert Audience.select(audience, perms, {:channel, :general}) == [ann, bob, cy]
    assert Audience.select(audience, perms, {:channel, :mods}) == [bob]
    assert Audience.select(audience, perms, {:channel, :quiet}) == [ann, bob]
    assert Audience.select(audience, perms, {:channel, :general, @view ||| @send}) == [bob]
    assert Audience.select(audience, perms, {:channel, :general, 0}) == [ann, bob, cy]
    assert Audience.select(audience, perms, {:window, {0, 99}}) == [ann, bob]
    assert Audience.select(audience, perms, {:window, {100, 199}}) == [bob]
    assert Audience.select(audience, perms, {:window, {5, 10}}) == []
    assert Audience.count(audience, perms, {:channel, :quiet}) == 2

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.select(audience, perms, {:channel, :nope})
    end

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.count(audience, perms, {:channel, self()})
    end
  end

  test "passive sessions get events only when forced, and only if they may see them",
       %{audience: audience, perms: perms} do
    [ann, ann2, bob, cy] = pids(4)
    Audience.add(audience, ann, :ann, [], active: false, watch: [{0, 99}])
    Audience.add(audience, ann2, :ann, [])
    Audience.add(audience, bob, :bob, [], active: false)
    Audience.add(audience, cy, :cy, [:mod], active: false)

    assert Audience.select(audience, perms, {:channel, :general}) == [ann2]
    assert Audience.select(audience, perms, {:channel, :general}, force: [:ann]) == [ann, ann2]

    assert Audience.select(audience, perms, {:channel, :general},
             force: [:ann, :cy, :nobody, self()]
           ) == [ann, ann2, cy]

    # Forced, but may not see the channel.
    assert Audience.select(audience, perms, {:channel, :mods}, force: [:ann, :bob]) == []
    assert Audience.select(audience, perms, {:channel, :mods}, force: [:cy]) == [cy]
    assert Audience.select(audience, perms, :all, force: [:bob]) == [ann2, bob]
    assert Audience.select(audience, perms, {:window, {0, 99}}) == []
    assert Audience.select(audience, perms, {:window, {0, 99}}, force: [:ann]) == [ann]

    assert Audience.select(audience, perms, {:channel, :general}, sessions: :passive) == [
             ann,
             bob,
             cy
           ]

    assert Audience.select(audience, perms, {:channel, :mods}, sessions: :all) == [cy]
    assert Audience.count(audience, perms, :all, sessions: :passive) == 3
    assert Audience.count(audience, perms, {:channel, :general}, force: [:ann]) == 2
  end

  test "updates: roles, activity, windows, and every session of a member", %{
    audience: audience,
    perms: perms
  } do
    [a1, a2, b] = pids(3)
    Audience.add(audience, a1, :ann, [])
    Audience.add(audience, a2, :ann, [], active: false)
    Audience.add(audience, b, :bob, [])
    assert Audience.select(audience, perms, {:channel, :mods}, sessions: :all) == []

    assert Audience.update_member(audience, :ann, [:mod, :mod]) == 2
    assert Audience.select(audience, perms, {:channel, :mods}, sessions: :all) == [a1, a2]

    :ok = Audience.update(audience, a1, roles: [])
    assert Audience.select(audience, perms, {:channel, :mods}, sessions: :all) == [a2]

    :ok = Audience.update(audience, a2, active: true, watch: [{0, 9}])
    assert Audience.select(audience, perms, {:channel, :mods}) == [a2]
    assert Audience.select(audience, perms, {:window, {0, 9}}) == [a2]
    :ok = Audience.update(audience, a2, watch: [])
    assert Audience.select(audience, perms, {:window, {0, 9}}) == []

    assert [%{pid: ^a1, role_ids: []}, %{pid: ^a2, role_ids: [:mod], active: true, watch: []}, _] =
             Audience.to_list(audience)

    assert_raise ArgumentError, ~r/not in the audience/, fn ->
      Audience.update(audience, self(), active: true)
    end

    assert Audience.update_member(audience, :nobody, [:mod]) == 0
  end

  test "the next select sees every permission change", %{audience: audience, perms: perms} do
    [ann, bob, cy] = pids(3)
    Audience.add(audience, ann, :ann, [:mod])
    Audience.add(audience, bob, :bob, [])
    Audience.add(audience, cy, :cy, [:muted])
    assert Audience.select(audience, perms, {:channel, :general}) == [ann, bob, cy]

    no_view = Permissions.put_everyone(perms, 0)
    assert Audience.select(audience, no_view, {:channel, :general}) == []
    mod_views = Permissions.put_role(no_view, :mod, @view)
    assert Audience.select(audience, mod_views, {:channel, :general}) == [ann]

    assert Audience.select(
             audience,
             Permissions.delete_role(mod_views, :mod),
             {:channel, :general}
           ) == []

    owned = Permissions.put_owner(no_view, :cy)
    assert Audience.select(audience, owned, {:channel, :general}) == [cy]

    assert Audience.select(audience, Permissions.put_owner(owned, nil), {:channel, :general}) ==
             []

    changed = Permissions.put_channel(perms, :general, [{:member, :bob, 0, @view}])
    assert Audience.select(audience, changed, {:channel, :general}) == [ann, cy]
    # Older values still give their own answers.
    assert Audience.select(audience, perms, {:channel, :general}) == [ann, bob, cy]
    assert Audience.select(audience, changed, {:channel, :general}) == [ann, cy]

    deleted = Permissions.delete_channel(changed, :general)

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.select(audience, deleted, {:channel, :general})
    end

    assert Audience.select(audience, deleted, {:channel, :mods}) == [ann]
  end

  test "pids of other nodes are kept and returned", %{audience: audience, perms: perms} do
    [local] = pids(1)
    [r1, r2] = FakePids.pids(:"ghost@10.255.255.1", 2)
    Audience.add(audience, r1, :ann, [], watch: [{0, 99}])
    Audience.add(audience, local, :bob, [])
    Audience.add(audience, r2, :cy, [:mod])
    assert Audience.select(audience, perms, {:channel, :general}) == [r1, local, r2]
    assert Audience.select(audience, perms, {:channel, :mods}) == [r2]
    assert Audience.member?(audience, r1)

    assert [{%{general: 1}, [^r1, ^local]}, {%{general: 1, mods: 2}, [^r2]}] =
             Audience.select_groups(audience, perms, %{general: 1, mods: 2}, sessions: :all)

    :ok = Audience.remove(audience, r1)
    refute Audience.member?(audience, r1)
    assert Audience.select(audience, perms, :all) == [local, r2]
    assert Enum.map(Audience.to_list(audience), & &1.pid) == [local, r2]
    assert_raise ArgumentError, ~r/already/, fn -> Audience.add(audience, r2, :x, []) end
  end

  test "select_groups groups sessions by the channels they may see", %{
    audience: audience,
    perms: perms
  } do
    [a, b, c, d, e] = pids(5)
    Audience.add(audience, a, :a, [], active: false)
    Audience.add(audience, b, :b, [:mod], active: false)
    Audience.add(audience, c, :c, [:muted], active: false)
    Audience.add(audience, d, :d, [], active: false)
    Audience.add(audience, e, :e, [])

    channels = %{general: 10, mods: 20, quiet: 30}

    assert Audience.select_groups(audience, perms, channels) == [
             {%{general: 10, quiet: 30}, [a, d]},
             {%{general: 10, mods: 20, quiet: 30}, [b]},
             {%{general: 10}, [c]}
           ]

    assert Audience.select_groups(audience, perms, channels, sessions: :active) == [
             {%{general: 10, quiet: 30}, [e]}
           ]

    assert Audience.select_groups(audience, perms, %{mods: 1}) == [{%{mods: 1}, [b]}]
    assert Audience.select_groups(audience, perms, %{}) == []

    assert Audience.select_groups(audience, perms, channels, required: @view ||| @send) == [
             {%{general: 10, mods: 20, quiet: 30}, [b]}
           ]

    assert_raise ArgumentError, ~r/unknown channel/, fn ->
      Audience.select_groups(audience, perms, %{nope: 1})
    end
  end

  test "the slices of one count split the sessions, the same way every time", %{
    audience: audience,
    perms: perms
  } do
    sessions = pids(300)

    for {pid, n} <- Enum.with_index(sessions),
        do: Audience.add(audience, pid, n, [], active: false)

    channels = %{general: 1}
    [{^channels, all}] = Audience.select_groups(audience, perms, channels)

    slice = fn index, count ->
      for {^channels, pids} <-
            Audience.select_groups(audience, perms, channels, slice: {index, count}),
          pid <- pids,
          do: pid
    end

    for count <- [1, 2, 16, 64] do
      parts = for index <- 0..(count - 1), do: slice.(index, count)
      # Disjoint, every session in one, each part in slot order.
      assert Enum.sort(Enum.concat(parts)) == Enum.sort(all)
      assert Enum.all?(parts, fn part -> part == Enum.filter(all, &(&1 in part)) end)
      if count > 1, do: assert(Enum.count(parts, &(&1 != [])) > 1)
    end

    # A session that leaves and comes back, in another slot, is in the same slice.
    [first | _] = all
    member = Enum.find_index(sessions, &(&1 == first))
    index = Enum.find(0..15, &(first in slice.(&1, 16)))
    :ok = Audience.remove(audience, first)
    [newcomer] = pids(1)
    Audience.add(audience, newcomer, :newcomer, [], active: false)
    Audience.add(audience, first, member, [], active: false)
    assert List.last(Audience.select(audience, perms, :all, sessions: :all)) == first
    assert first in slice.(index, 16)
  end

  test "many channels (more than 64) group too", %{audience: audience} do
    perms =
      Enum.reduce(
        1..130,
        Permissions.new(everyone: @view, roles: %{r: 0}),
        &Permissions.put_channel(&2, &1, [{:role, :r, 0, @view}])
      )

    [a, b] = pids(2)
    Audience.add(audience, a, :a, [], active: false)
    Audience.add(audience, b, :b, [:r], active: false)
    channels = Map.new(1..130, &{&1, &1 * 2})
    assert Audience.select_groups(audience, perms, channels) == [{channels, [a]}]
  end

  @tag :slow
  test "an audience holds 65,536 sessions, and no more" do
    audience = Audience.new()

    perms =
      Permissions.new(everyone: @view, roles: %{r: 0})
      |> Permissions.put_channel(:c, [{:role, :r, 0, @view}])

    max = Audience.max_sessions()
    remote = FakePids.pids(:"ghost@10.255.255.1", max + 1)

    remote
    |> Enum.take(max)
    |> Enum.with_index()
    |> Enum.each(fn {pid, i} ->
      :ok = Audience.add(audience, pid, i, if(rem(i, 2) == 0, do: [:r], else: []))
    end)

    assert Audience.size(audience) == max

    assert_raise ArgumentError, ~r/full/, fn ->
      Audience.add(audience, List.last(remote), :x, [])
    end

    assert Audience.count(audience, perms, {:channel, :c}) == div(max, 2)
    selected = Audience.select(audience, perms, {:channel, :c})
    assert length(selected) == div(max, 2)
    assert hd(selected) == Enum.at(remote, 1)
  end

  test "memory grows with sessions and caches, and comes back" do
    perms = Permissions.new(everyone: @view) |> Permissions.put_channel(:c, [])

    task =
      Task.async(fn ->
        audience = Audience.new()
        empty = Audience.memory(audience)

        for {pid, i} <- Enum.with_index(pids(2_000)),
            do: Audience.add(audience, pid, i, [rem(i, 10)])

        filled = Audience.memory(audience)
        Audience.select(audience, perms, {:channel, :c})
        cached = Audience.memory(audience)
        {empty, filled, cached}
      end)

    {empty, filled, cached} = Task.await(task)
    assert empty < filled
    assert filled < cached
    # Per session: a few tens of bytes, not hundreds.
    assert (filled - empty) / 2_000 < 200
  end

  test "roles are freed with their last session, and big role lists work", %{
    audience: audience,
    perms: perms
  } do
    [a, b] = pids(2)
    roles = Enum.to_list(1..5_000)
    Audience.add(audience, a, :a, roles)
    Audience.add(audience, b, :b, [:mod | roles])
    assert Audience.select(audience, perms, {:channel, :mods}) == [b]
    [%{role_ids: held} | _] = Audience.to_list(audience)
    assert held == roles
    Audience.remove(audience, a)
    Audience.remove(audience, b)
    assert Audience.size(audience) == 0
    Audience.add(audience, a, :a, [:mod])
    assert Audience.select(audience, perms, {:channel, :mods}) == [a]
    assert (@view ||| @send) == Permissions.compute(perms, :a, [:mod], :mods)
  end
end

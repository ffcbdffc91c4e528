defmodule GuildKit.Permissions.ApiTest do
  @moduledoc """
  `GuildKit.Permissions` case by case: each step of Discord's algorithm, the owner and
  administrators, unknown roles, merged duplicate overwrites, ids compared as map keys,
  value semantics (within a process, across processes), `to_options/1` round trips.
  """
  use ExUnit.Case, async: true
  import Bitwise
  alias GuildKit.Permissions

  @view 0x400
  @send 0x800
  @embed 0x4000
  @all 0xFFFF_FFFF_FFFF_FFFF

  describe "base permissions" do
    test "are @everyone OR the member's roles, ignoring roles the model does not know" do
      perms = Permissions.new(everyone: @view, roles: %{a: @send, b: @embed})
      assert Permissions.compute(perms, 1, []) == @view
      assert Permissions.compute(perms, 1, [:a]) == (@view ||| @send)
      assert Permissions.compute(perms, 1, [:a, :b, :gone, :a]) == (@view ||| @send ||| @embed)
    end

    test "the owner and administrators have all 64 bits" do
      perms = Permissions.new(everyone: 0, roles: %{admin: 0x8 ||| @send}, owner: {:user, 7})
      assert Permissions.compute(perms, {:user, 7}, []) == @all
      assert Permissions.compute(perms, {:user, 8}, [:admin]) == @all
      assert Permissions.compute(perms, {:user, 8}, []) == 0
      # An @everyone with ADMINISTRATOR makes everyone an administrator.
      assert Permissions.compute(Permissions.put_everyone(perms, 0x8), 1, []) == @all
    end

    test "defaults: no bits, no roles, no owner" do
      perms = Permissions.new()
      assert Permissions.compute(perms, nil, []) == 0
      assert Permissions.to_options(perms) == [everyone: 0, roles: %{}, owner: nil, channels: %{}]
    end
  end

  describe "channel permissions" do
    setup do
      perms =
        Permissions.new(
          everyone: @view ||| @send,
          roles: %{mod: 0, muted: 0, admin: 0x8},
          owner: :boss
        )

      %{perms: perms}
    end

    test "apply @everyone, then all role denies, then all role allows, then the member", %{
      perms: perms
    } do
      perms =
        Permissions.put_channel(perms, :c, [
          {:everyone, @embed, @send},
          {:role, :muted, 0, @view},
          {:role, :mod, @view ||| @send, 0},
          {:member, :ann, 0, @embed}
        ])

      assert Permissions.compute(perms, :bob, [], :c) == (@view ||| @embed)
      assert Permissions.compute(perms, :bob, [:muted], :c) == @embed
      # mod's allow beats muted's deny, whatever the order of the roles.
      assert Permissions.compute(perms, :bob, [:muted, :mod], :c) == (@view ||| @send ||| @embed)
      assert Permissions.compute(perms, :bob, [:mod, :muted], :c) == (@view ||| @send ||| @embed)
      # The member's own overwrite comes last.
      assert Permissions.compute(perms, :ann, [:mod], :c) == (@view ||| @send)
    end

    test "the owner and administrators bypass every overwrite", %{perms: perms} do
      perms =
        Permissions.put_channel(perms, :c, [
          {:everyone, 0, @all},
          {:role, :admin, 0, @all},
          {:member, :boss, 0, @all},
          {:member, :ann, 0, @all}
        ])

      assert Permissions.compute(perms, :boss, [], :c) == @all
      assert Permissions.compute(perms, :ann, [:admin], :c) == @all
      assert Permissions.compute(perms, :bob, [], :c) == 0
    end

    test "ADMINISTRATOR granted by an overwrite is just a bit", %{perms: perms} do
      perms = Permissions.put_channel(perms, :c, [{:everyone, 0x8, 0}])
      assert Permissions.compute(perms, :bob, [], :c) == (@view ||| @send ||| 0x8)
    end

    test "overwrites of roles the model does not know apply once the role exists", %{perms: perms} do
      perms = Permissions.put_channel(perms, :c, [{:role, :later, 0, @view}])
      assert Permissions.compute(perms, :bob, [:later], :c) == (@view ||| @send)

      assert Permissions.compute(Permissions.put_role(perms, :later, 0), :bob, [:later], :c) ==
               @send

      assert Permissions.compute(Permissions.delete_role(perms, :mod), :bob, [:mod], :c) ==
               (@view ||| @send)
    end

    test "several overwrites for one target merge, in any order", %{perms: perms} do
      a =
        Permissions.put_channel(perms, :c, [
          {:everyone, @embed, 0},
          {:everyone, 0, @send},
          {:member, :ann, @send, 0},
          {:member, :ann, 0, @view}
        ])

      b =
        Permissions.put_channel(perms, :c, [
          {:member, :ann, 0, @view},
          {:everyone, 0, @send},
          {:member, :ann, @send, 0},
          {:everyone, @embed, 0}
        ])

      for p <- [a, b] do
        assert Permissions.compute(p, :bob, [], :c) == (@view ||| @embed)
        assert Permissions.compute(p, :ann, [], :c) == (@send ||| @embed)
      end

      assert Permissions.to_options(a)[:channels] == Permissions.to_options(b)[:channels]
    end

    test "an unknown channel raises", %{perms: perms} do
      assert_raise ArgumentError, ~r/unknown channel/, fn ->
        Permissions.compute(perms, :bob, [], :nope)
      end

      # An id that cannot be stored names no channel either.
      assert_raise ArgumentError, ~r/unknown channel/, fn ->
        Permissions.compute(perms, :bob, [], self())
      end

      deleted = perms |> Permissions.put_channel(:c, []) |> Permissions.delete_channel(:c)

      assert_raise ArgumentError, ~r/unknown channel/, fn ->
        Permissions.compute(deleted, :bob, [], :c)
      end

      refute Permissions.has_channel?(deleted, :c)
    end
  end

  test "ids compare as map keys: 1 and 1.0 are different roles, members and channels" do
    perms =
      Permissions.new(roles: %{1 => @view, 1.0 => @send}, owner: 2)
      |> Permissions.put_channel(3, [{:member, 4.0, @embed, 0}])
      |> Permissions.put_channel(3.0, [])

    assert Permissions.compute(perms, :x, [1]) == @view
    assert Permissions.compute(perms, :x, [1.0]) == @send
    assert Permissions.compute(perms, 2.0, []) == 0
    assert Permissions.compute(perms, 2, []) == @all
    assert Permissions.compute(perms, 4, [], 3) == 0
    assert Permissions.compute(perms, 4.0, [], 3) == @embed
    assert Permissions.compute(perms, 4.0, [], 3.0) == 0
  end

  test "ids may be any storable term" do
    ids = [{:role, 1}, "role", [1, 2], %{a: 1}, -5, 2 ** 70, 1.5, :atom, {}]
    # Bits from 11 on: none is ADMINISTRATOR.
    roles = Map.new(Enum.with_index(ids), fn {id, i} -> {id, 1 <<< (i + 11)} end)
    perms = Permissions.new(roles: roles)

    for {id, i} <- Enum.with_index(ids) do
      assert Permissions.compute(perms, id, [id]) == 1 <<< (i + 11)
      perms = Permissions.put_channel(perms, id, [{:member, id, 1 <<< 40, 0}])
      assert Permissions.compute(perms, id, [id], id) == (1 <<< (i + 11) ||| 1 <<< 40)
    end
  end

  describe "values" do
    test "a change returns a new value and leaves the old one as it was" do
      p0 = Permissions.new(everyone: @view)
      p1 = Permissions.put_role(p0, :r, @send)
      p2 = Permissions.put_channel(p1, :c, [{:role, :r, 0, @view}])
      p3 = Permissions.put_owner(p2, :ann)
      p4 = Permissions.delete_role(p3, :r)

      assert Permissions.compute(p0, :ann, [:r]) == @view
      assert Permissions.compute(p1, :ann, [:r]) == (@view ||| @send)
      assert Permissions.compute(p2, :ann, [:r], :c) == @send
      assert Permissions.compute(p3, :ann, [:r], :c) == @all
      assert Permissions.compute(p4, :bob, [:r], :c) == @view
      refute Permissions.has_channel?(p1, :c)

      assert Permissions.to_options(p1) == [
               everyone: @view,
               roles: %{r: @send},
               owner: nil,
               channels: %{}
             ]
    end

    test "a value sent to another process does not see later changes" do
      perms = Permissions.new(everyone: @view) |> Permissions.put_channel(:c, [])
      parent = self()

      pid =
        spawn(fn ->
          receive do
            {:perms, p} ->
              send(parent, {:ready, self()})

              receive do:
                        (:check -> send(parent, {:result, Permissions.compute(p, :ann, [], :c)}))
          end
        end)

      send(pid, {:perms, perms})
      assert_receive {:ready, ^pid}
      changed = Permissions.put_channel(perms, :c, [{:everyone, 0, @view}])
      assert Permissions.compute(changed, :ann, [], :c) == 0
      send(pid, :check)
      assert_receive {:result, @view}
    end

    test "to_options/1 rebuilds an equal value with new/1" do
      perms =
        Permissions.new(everyone: @view, roles: %{1 => @send, {:r, 2} => 0x8}, owner: "ann")
        |> Permissions.put_channel(:c, [
          {:role, 1, 0, @view},
          {:member, :bob, @embed, 0},
          {:everyone, @embed, 0}
        ])
        |> Permissions.put_channel("d", [])

      options = Permissions.to_options(perms)
      rebuilt = Permissions.new(options)
      assert Permissions.to_options(rebuilt) == options

      assert options[:channels][:c] == [
               {:everyone, @embed, 0},
               {:role, 1, 0, @view},
               {:member, :bob, @embed, 0}
             ]

      for member <- [:bob, "ann", :x], roles <- [[], [1], [{:r, 2}]], channel <- [:c, "d"] do
        assert Permissions.compute(rebuilt, member, roles, channel) ==
                 Permissions.compute(perms, member, roles, channel)
      end
    end

    test "inspect shows the counts" do
      perms = Permissions.new(roles: %{a: 1}) |> Permissions.put_channel(:c, [])
      assert inspect(perms) == "#GuildKit.Permissions<roles: 1, channels: 1>"
    end
  end

  test "large models are built and read back" do
    # Shifted past ADMINISTRATOR (bit 3).
    roles = Map.new(1..5_000, &{&1, &1 <<< 4})

    channels =
      Map.new(1..600, fn c -> {c, for(r <- 1..15, do: {:role, c * 15 + r, @view, 0})} end)

    perms = Permissions.new(roles: roles, channels: channels)
    options = Permissions.to_options(perms)
    assert options[:roles] == roles
    assert map_size(options[:channels]) == 600
    assert Permissions.compute(perms, :x, [16], 1) == (16 <<< 4 ||| @view)

    # A channel too big for one chunk of to_options/1 comes back whole.
    big = for m <- 1..20_000, do: {:member, {:user, m}, m, 0}
    with_big = Permissions.put_channel(perms, :big, big)
    assert Permissions.to_options(with_big)[:channels][:big] == Enum.sort(big)
    assert Permissions.to_options(with_big)[:channels][1] == options[:channels][1]

    assert Permissions.compute(perms, :x, Enum.to_list(1..3_000), 1) ==
             Enum.reduce(1..3_000, @view, &(&1 <<< 4 ||| &2))
  end
end

defmodule GuildKit.Permissions.FuzzTest do
  @moduledoc """
  Thousands of random terms, unsupported ones included (pids, refs, funs, improper
  lists, bitstrings, deep nesting, big binaries), fed to every public function of
  `GuildKit.Permissions` and `GuildKit.Audience`, in arguments of mostly the right
  shapes: each call returns or raises `ArgumentError`, nothing else, and both structures
  still answer afterwards. Replay with `GUILD_KIT_SEED=<seed>`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.{Audience, Permissions}
  alias GuildKit.Test.Fuzz

  @rounds 6_000

  test "every public function returns or raises ArgumentError" do
    perms = Permissions.new(everyone: 0x400, roles: %{mod: 0}) |> Permissions.put_channel(:c, [])
    audience = Audience.new()
    sessions = for _ <- 1..4, do: spawn(fn -> receive do: (:never -> :ok) end)
    Enum.each(sessions, &Audience.add(audience, &1, :ann, [:mod]))

    Fuzz.run("permissions fuzz", @rounds, fn -> Fuzz.term([self()]) end, fn a, b, c ->
      calls(perms, audience, sessions, a, b, c)
    end)

    assert Permissions.compute(perms, :ann, [:mod], :c) == 0x400

    assert length(Audience.select(audience, perms, :all, sessions: :all)) ==
             Audience.size(audience)
  end

  defp calls(perms, audience, sessions, a, b, c) do
    p = fn -> Enum.random([perms, perms, perms, a]) end
    au = fn -> Enum.random([audience, audience, audience, a]) end
    pid = fn -> Enum.random([hd(sessions), spawn(fn -> :ok end), a]) end

    [
      {"new", fn -> Permissions.new(options(a, b)) end},
      {"put_role", fn -> Permissions.put_role(p.(), b, bits(c)) end},
      {"delete_role", fn -> Permissions.delete_role(p.(), b) end},
      {"put_everyone", fn -> Permissions.put_everyone(p.(), bits(b)) end},
      {"put_owner", fn -> Permissions.put_owner(p.(), b) end},
      {"put_channel", fn -> Permissions.put_channel(p.(), b, overwrites(c)) end},
      {"delete_channel", fn -> Permissions.delete_channel(p.(), b) end},
      {"compute/3", fn -> Permissions.compute(p.(), b, list(c)) end},
      {"compute/4", fn -> Permissions.compute(p.(), b, list(c), Enum.random([:c, a])) end},
      {"has_channel?", fn -> Permissions.has_channel?(p.(), b) end},
      {"to_options", fn -> Permissions.to_options(p.()) end},
      {"Audience.add", fn -> Audience.add(au.(), pid.(), b, list(c), options(a, c)) end},
      {"Audience.update", fn -> Audience.update(au.(), pid.(), options(b, c)) end},
      {"Audience.update_member", fn -> Audience.update_member(au.(), b, list(c)) end},
      {"Audience.remove", fn -> Audience.remove(au.(), Enum.random([pid.(), a])) end},
      {"Audience.member?", fn -> Audience.member?(au.(), pid.()) end},
      {"Audience.size", fn -> Audience.size(au.()) end},
      {"Audience.select", fn -> Audience.select(au.(), p.(), filter(b), options(c, a)) end},
      {"Audience.count", fn -> Audience.count(au.(), p.(), filter(b), options(c, a)) end},
      {"Audience.select_groups",
       fn ->
         Audience.select_groups(au.(), p.(), Enum.random([%{c: b}, %{b => 1}, b]), options(c, a))
       end},
      {"Audience.to_list", fn -> Audience.to_list(au.()) end},
      {"Audience.memory", fn -> Audience.memory(au.()) end}
    ]
  end

  defp options(a, b) do
    Enum.random([
      [],
      [everyone: bits(a)],
      [roles: %{a => bits(b)}],
      [owner: a],
      [channels: %{a => overwrites(b)}],
      [active: a],
      [watch: [a]],
      [watch: [{0, 9}, a]],
      [roles: list(a)],
      [force: list(a)],
      [sessions: a],
      [required: a],
      [unknown: 1],
      a
    ])
  end

  defp bits(term), do: Enum.random([term, 0, 0x400, 2 ** 64 - 1, 2 ** 64, -1])
  defp list(term), do: Enum.random([[term], [term, :mod], term, [:mod | term]])

  defp overwrites(term) do
    Enum.random([
      [{:everyone, 0, 0x400}, {:role, term, 0x400, 0}],
      [{:member, term, bits(term), 0}],
      [term],
      term,
      [{:role, :mod, 0, 0} | term]
    ])
  end

  defp filter(term) do
    Enum.random([
      :all,
      {:channel, :c},
      {:channel, term},
      {:channel, :c, bits(term)},
      {:window, {0, 9}},
      {:window, term},
      term
    ])
  end
end

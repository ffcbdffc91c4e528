defmodule GuildKit.Permissions.OracleTest do
  @moduledoc """
  Oracle test of `GuildKit.Permissions` and `GuildKit.Audience` against the pure-Elixir
  model in `GuildKit.Test.PermissionsModel`, on three printed seeds: a guild with up to
  250 roles (some administrators), an owner, members holding 0-20 roles (some of them
  unknown to the model), channels with 0-15 overwrites of every kind (duplicates and
  unknown roles included), and hundreds of sessions. Permission changes and session
  changes are interleaved with queries: after every change, `compute/3` and `compute/4`
  agree with the model for sampled members, values kept from before the change still
  agree with the model of that time, and `Audience.select/4`, `count/4` and
  `select_groups/4` equal an `Enum.filter` over the same sessions.

  Replay with `GUILD_KIT_SEED=<seed> mix test test/guild_kit/permissions/oracle_test.exs`.
  """
  use ExUnit.Case, async: true
  import Bitwise
  alias GuildKit.{Audience, Permissions}
  alias GuildKit.Test.PermissionsModel, as: Model
  alias GuildKit.Test.TermGenerator

  @moduletag timeout: 600_000

  @steps 300
  @view 0x400
  @send 0x800

  for round <- 1..3 do
    test "permissions and selects equal the model, seed round #{round}" do
      base = TermGenerator.seed_from_env() || :erlang.unique_integer([:positive])
      seed = TermGenerator.seed(base + unquote(round) - 1)
      IO.puts("permissions oracle seed: #{seed}")
      run(seed)
    end
  end

  defp run(seed) do
    role_count = Enum.random(50..250)
    roles = for n <- 1..role_count, into: %{}, do: {role_id(n), random_bits()}
    members = for n <- 1..300, do: member_id(n)
    owner = Enum.random(members)
    everyone = Enum.random([0, @view, @view ||| @send, random_bits()])
    model = Model.new(everyone: everyone, roles: roles, owner: owner)

    model =
      Enum.reduce(1..20, model, fn c, model ->
        Model.put_channel(model, channel_id(c), random_overwrites(role_count, members))
      end)

    perms =
      Permissions.new(
        everyone: model.everyone,
        roles: model.roles,
        owner: model.owner,
        channels: model.channels
      )

    assert_same(perms, model, members, role_count, "seed #{seed}, initial")

    audience = Audience.new()

    sessions =
      Enum.reduce(1..400, %{}, fn _, sessions ->
        add_session(audience, sessions, members, role_count)
      end)

    Enum.reduce(1..@steps, {perms, model, sessions, []}, fn step,
                                                            {perms, model, sessions, kept} ->
      context = "seed #{seed}, step #{step}"

      {perms, model, sessions, change} =
        random_change(audience, perms, model, sessions, members, role_count)

      context = "#{context} (#{inspect(change, limit: 6)})"

      assert_same(perms, model, members, role_count, context)
      check_selects(audience, perms, model, sessions, members, context)

      # Values kept from before earlier changes never see the later ones.
      for {old_perms, old_model} <- kept do
        assert_same(
          old_perms,
          old_model,
          Enum.take_random(members, 5),
          role_count,
          "#{context}, kept value"
        )
      end

      kept = if rem(step, 25) == 0, do: Enum.take([{perms, model} | kept], 4), else: kept
      {perms, model, sessions, kept}
    end)
  end

  defp role_id(n) do
    case rem(n, 3) do
      0 -> n
      1 -> {:role, n}
      2 -> "role #{n}"
    end
  end

  defp member_id(n), do: if(rem(n, 2) == 0, do: n * 1_000_003, else: {:user, n})
  defp channel_id(n), do: if(rem(n, 2) == 0, do: n, else: "channel #{n}")

  # Roles the model may know (some deleted later) and a few it never does.
  defp random_role(role_count), do: role_id(:rand.uniform(role_count + 30))

  defp random_bits do
    case :rand.uniform(12) do
      1 -> 0x8
      2 -> 0
      3 -> 0xFFFF_FFFF_FFFF_FFFF
      4 -> :rand.uniform(1 <<< 64) - 1
      n when n <= 8 -> @view
      _ -> Enum.random([@send, @view ||| @send, 0x4000, @view ||| 0x4000])
    end
  end

  defp random_overwrite_bits do
    Enum.random([0, 0, @view, @send, @view ||| @send, 0x8, 0x4000, :rand.uniform(1 <<< 64) - 1])
  end

  defp random_overwrites(role_count, members) do
    for _ <- 1..(:rand.uniform(16) - 1) do
      case :rand.uniform(3) do
        1 -> {:everyone, random_overwrite_bits(), random_overwrite_bits()}
        2 -> {:role, random_role(role_count), random_overwrite_bits(), random_overwrite_bits()}
        3 -> {:member, Enum.random(members), random_overwrite_bits(), random_overwrite_bits()}
      end
    end
  end

  defp random_roles(role_count),
    do: for(_ <- 1..(:rand.uniform(21) - 1), do: random_role(role_count))

  defp add_session(audience, sessions, members, role_count) do
    pid = spawn(fn -> :ok end)
    member = Enum.random(members)
    roles = random_roles(role_count)
    active = :rand.uniform(3) > 1
    watch = Enum.take_random([{0, 99}, {100, 199}, {200, 299}], :rand.uniform(3) - 1)
    :ok = Audience.add(audience, pid, member, roles, active: active, watch: watch)
    Map.put(sessions, pid, %{member: member, roles: roles, active: active, watch: watch})
  end

  defp random_change(audience, perms, model, sessions, members, role_count) do
    case :rand.uniform(14) do
      1 ->
        {role, bits} = {random_role(role_count), random_bits()}

        {Permissions.put_role(perms, role, bits), Model.put_role(model, role, bits), sessions,
         {:put_role, role, bits}}

      2 ->
        role = random_role(role_count)

        {Permissions.delete_role(perms, role), Model.delete_role(model, role), sessions,
         {:delete_role, role}}

      3 ->
        bits = Enum.random([0, @view, random_bits()])

        {Permissions.put_everyone(perms, bits), Model.put_everyone(model, bits), sessions,
         {:put_everyone, bits}}

      4 ->
        owner = Enum.random([nil | Enum.take_random(members, 3)])

        {Permissions.put_owner(perms, owner), Model.put_owner(model, owner), sessions,
         {:put_owner, owner}}

      n when n in 5..6 ->
        channel = channel_id(:rand.uniform(24))
        overwrites = random_overwrites(role_count, members)

        {Permissions.put_channel(perms, channel, overwrites),
         Model.put_channel(model, channel, overwrites), sessions,
         {:put_channel, channel, overwrites}}

      7 ->
        channel = channel_id(:rand.uniform(24))

        {Permissions.delete_channel(perms, channel), Model.delete_channel(model, channel),
         sessions, {:delete_channel, channel}}

      8 ->
        {perms, model, add_session(audience, sessions, members, role_count), :add}

      9 when map_size(sessions) > 0 ->
        pid = Enum.random(Map.keys(sessions))
        :ok = Audience.remove(audience, pid)
        {perms, model, Map.delete(sessions, pid), {:remove, pid}}

      10 when map_size(sessions) > 0 ->
        pid = Enum.random(Map.keys(sessions))
        roles = random_roles(role_count)
        :ok = Audience.update(audience, pid, roles: roles)
        {perms, model, put_in(sessions[pid].roles, roles), {:update_roles, pid}}

      11 ->
        member = Enum.random(members)
        roles = random_roles(role_count)
        count = Audience.update_member(audience, member, roles)

        updated =
          for {pid, %{member: ^member} = s} <- sessions, into: %{}, do: {pid, %{s | roles: roles}}

        assert count == map_size(updated)
        {perms, model, Map.merge(sessions, updated), {:update_member, member}}

      12 when map_size(sessions) > 0 ->
        pid = Enum.random(Map.keys(sessions))
        active = :rand.uniform(2) == 1
        watch = Enum.take_random([{0, 99}, {100, 199}, {200, 299}], :rand.uniform(3) - 1)
        :ok = Audience.update(audience, pid, active: active, watch: watch)

        {perms, model, Map.update!(sessions, pid, &%{&1 | active: active, watch: watch}),
         {:update, pid}}

      _ ->
        {perms, model, sessions, :none}
    end
  end

  defp assert_same(perms, model, members, role_count, context) do
    for member <- Enum.take_random(members, 8) do
      roles = random_roles(role_count)

      assert Permissions.compute(perms, member, roles) == Model.compute(model, member, roles),
             context

      for channel <- Enum.take_random(Map.keys(model.channels), 4) do
        assert Permissions.compute(perms, member, roles, channel) ==
                 Model.compute(model, member, roles, channel),
               "#{context}: #{inspect(member)} with #{inspect(roles)} in #{inspect(channel)}"
      end
    end
  end

  defp check_selects(audience, perms, model, sessions, members, context) do
    # Slot order is not the model's business: compare as sorted lists, and check that
    # a select's order is that of :all.
    all = Audience.select(audience, perms, :all, sessions: :all)
    assert Enum.sort(all) == Enum.sort(Map.keys(sessions)), context

    channels = Map.keys(model.channels)
    forced = Enum.take_random(members, :rand.uniform(4) - 1)

    for channel <- Enum.take_random(channels, 2), required <- [@view, @view ||| @send] do
      filter = if required == @view, do: {:channel, channel}, else: {:channel, channel, required}

      expected =
        Enum.filter(sessions, fn {_pid, s} ->
          (s.active or s.member in forced) and
            (Model.compute(model, s.member, s.roles, channel) &&& required) == required
        end)

      got = Audience.select(audience, perms, filter, force: forced)

      assert Enum.sort(got) == Enum.sort(for {pid, _} <- expected, do: pid),
             "#{context}: #{inspect(filter)}"

      assert got == Enum.filter(all, &(&1 in got)), "#{context}: order"
      assert Audience.count(audience, perms, filter, force: forced) == length(got), context
    end

    window = Enum.random([{0, 99}, {100, 199}, {200, 299}])
    expected = for {pid, s} <- sessions, s.active, window in s.watch, do: pid

    assert Enum.sort(Audience.select(audience, perms, {:window, window})) == Enum.sort(expected),
           context

    if channels != [] and :rand.uniform(4) == 1 do
      asked = Map.new(Enum.take_random(channels, 5), &{&1, :erlang.phash2(&1)})

      expected =
        sessions
        |> Enum.reject(fn {_pid, s} -> s.active end)
        |> Enum.map(fn {pid, s} ->
          seen =
            for {channel, value} <- asked,
                (Model.compute(model, s.member, s.roles, channel) &&& @view) == @view,
                into: %{},
                do: {channel, value}

          {seen, pid}
        end)
        |> Enum.reject(fn {seen, _} -> seen == %{} end)
        |> Enum.group_by(fn {seen, _} -> seen end, fn {_, pid} -> pid end)
        |> Map.new(fn {seen, pids} -> {seen, Enum.sort(pids)} end)

      got = Audience.select_groups(audience, perms, asked)
      assert Map.new(got, fn {seen, pids} -> {seen, Enum.sort(pids)} end) == expected, context
      assert length(got) == map_size(expected), "#{context}: one group per set of channels"
    end
  end
end

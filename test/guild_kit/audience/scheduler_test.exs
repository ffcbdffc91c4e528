defmodule GuildKit.Audience.SchedulerTest do
  @moduledoc """
  The big operations of `GuildKit.Audience` and `GuildKit.Permissions` never hold a
  normal scheduler for 5 ms (`long_schedule`), results included: a full audience of
  65,536 sessions with distinct role sets, whose selects recompute after permission
  changes and return up to 65,536 pids (local and remote); grouping by 200 channels;
  listing every session; one member with thousands of sessions; and permissions with
  hundreds of thousands of roles and overwrites.
  """
  use ExUnit.Case, async: false
  import Bitwise
  alias GuildKit.{Audience, Permissions}
  alias GuildKit.Test.{FakePids, LongSchedule}

  @moduletag :slow
  @moduletag timeout: 600_000

  @view 0x400
  @sessions 65_536

  defp permissions(channels) do
    roles = Map.new(1..250, &{&1, if(rem(&1, 10) == 0, do: 0, else: 0x800)})

    Enum.reduce(1..channels, Permissions.new(everyone: @view, roles: roles), fn c, perms ->
      Permissions.put_channel(perms, c, [
        {:role, rem(c, 250) + 1, 0, @view},
        {:role, rem(c * 7, 250) + 1, @view, 0}
      ])
    end)
  end

  # A full audience: local pids first, then remote ones, members with 0-5 roles of
  # `roles` (1..250: nearly every session a role set of its own). Built in another
  # process, whose heap holds the sessions' pids: the measured process stays small, so
  # that neither its garbage collections nor its exit show up as long schedules.
  # Returns the audience and a function that stops the local sessions.
  defp full_audience(local, roles \\ 1..250, sessions \\ @sessions) do
    parent = self()

    owner =
      spawn(fn ->
        :rand.seed(:exsss, {1, 2, 3})
        audience = Audience.new()
        locals = for _ <- 1..local, do: spawn(fn -> receive do: (:stop -> :ok) end)
        remotes = FakePids.pids(:"ghost@10.255.255.1", sessions - local)

        (locals ++ remotes)
        |> Enum.with_index()
        |> Enum.each(fn {pid, i} ->
          roles = Enum.take_random(roles, :rand.uniform(6) - 1)
          :ok = Audience.add(audience, pid, i, roles, active: rem(i, 10) != 0, watch: [{0, 99}])
        end)

        send(parent, {:audience, audience, Enum.take(locals, 3_000)})
        receive do: (:stop -> Enum.each(locals, &send(&1, :stop)))
      end)

    receive do
      {:audience, audience, some_locals} -> {audience, some_locals, fn -> send(owner, :stop) end}
    end
  end

  @heap [min_heap_words: 4_000_000]

  test "selects over 65,536 sessions: recomputes after changes, and the biggest lists" do
    setup = fn ->
      {audience, _some, stop} = full_audience(@sessions - 4_096)
      {audience, stop, permissions(50)}
    end

    {sizes, all, passive, window} =
      LongSchedule.assert_no_long_schedule(
        setup,
        fn {audience, stop, perms} ->
          # First selects after a change of @everyone, of a role, of a channel.
          sizes =
            for {changed, c} <- [
                  {Permissions.put_everyone(perms, @view ||| 1 <<< 20), 1},
                  {Permissions.put_role(perms, 5, 0x800 ||| 1 <<< 21), 2},
                  {Permissions.put_channel(perms, 3, []), 3},
                  {perms, 4}
                ] do
              length(Audience.select(audience, changed, {:channel, c}))
            end

          # The biggest lists: every session, with and without remote pids.
          all = Audience.select(audience, perms, :all, sessions: :all)
          passive = Audience.select(audience, perms, {:channel, 1}, sessions: :passive)

          window =
            Audience.select(audience, perms, {:window, {0, 99}}, force: Enum.to_list(1..5_000))

          stop.()
          {sizes, length(all), length(passive), length(window)}
        end,
        @heap
      )

    assert Enum.all?(sizes, &(&1 > 1_000))
    assert all == @sessions
    assert passive > 1_000
    assert window > div(@sessions * 9, 10)
  end

  test "grouping by many channels, and one member with many sessions" do
    setup = fn ->
      # Roles from a pool of ten: a few hundred groups, so that the result (which the
      # caller's heap must take in, garbage collections included) stays a few MB.
      {audience, some, stop} = full_audience(8_192, Enum.map(1..10, &(&1 * 25)))
      many = for _ <- 1..3_000, do: spawn(fn -> receive do: (:stop -> :ok) end)
      Enum.each(some, &Audience.remove(audience, &1))
      Enum.each(many, &Audience.add(audience, &1, :popular, [1], active: false))
      {audience, fn -> stop.() && Enum.each(many, &send(&1, :stop)) end, permissions(200)}
    end

    {groups, updated, forced} =
      LongSchedule.assert_no_long_schedule(
        setup,
        fn {audience, stop, perms} ->
          groups =
            Audience.select_groups(audience, perms, Map.new(1..200, &{&1, &1}), sessions: :all)

          updated = Audience.update_member(audience, :popular, [2, 3])
          forced = Audience.select(audience, perms, {:channel, 1}, force: [:popular])
          stop.()
          {length(groups), updated, length(forced)}
        end,
        @heap
      )

    assert groups > 50
    assert updated == 3_000
    assert forced > 3_000
  end

  test "listing every session comes in chunks" do
    # 16,384 sessions: several MB of maps, which the caller's heap must take in.
    setup = fn -> full_audience(12_288, 1..250, 16_384) end

    listed =
      LongSchedule.assert_no_long_schedule(
        setup,
        fn {audience, _some, stop} ->
          listed = Audience.to_list(audience)
          stop.()
          {length(listed), List.last(listed).member_id}
        end,
        @heap
      )

    assert listed == {16_384, 16_383}
  end

  test "permissions with hundreds of thousands of roles and overwrites" do
    setup = fn ->
      roles = Map.new(1..200_000, &{{:role, &1}, &1 <<< 11})

      channels =
        Map.new(1..2_000, fn c ->
          {c, for(r <- 1..50, do: {:role, {:role, c * 50 + r}, @view, 0})}
        end)

      big_list = for r <- 1..100_000, do: {:role, {:role, r}, 0, @view}
      {roles, channels, big_list}
    end

    {base, in_channel, roles, has_channel} =
      LongSchedule.assert_no_long_schedule(
        setup,
        fn {roles, channels, big_list} ->
          perms = Permissions.new(roles: roles, channels: channels)
          perms = Permissions.put_role(perms, {:role, 1}, 0)
          perms = Permissions.put_channel(perms, :big, big_list)
          held = for r <- 1..50_000, do: {:role, r}
          base = Permissions.compute(perms, :x, held)
          in_channel = Permissions.compute(perms, :x, held, :big)
          options = Permissions.to_options(perms)
          perms = Permissions.delete_channel(perms, 1)
          {base, in_channel, map_size(options[:roles]), Permissions.has_channel?(perms, 1)}
        end,
        # Room for the input and every result without a garbage collection, whose
        # copying of this process's own data would be counted as a long schedule.
        min_heap_words: 40_000_000
      )

    assert base > 0
    assert (in_channel &&& @view) == 0
    assert roles == 200_000
    refute has_channel
  end

  test "removing the session of a huge member id, and a removal that compacts many keys" do
    # A removal that leaves most of the key store dead compacts it: 16 MiB of one key
    # freed, or 65,536 keys of 200 bytes copied, at once.
    huge = :binary.copy("m", 16 * 1024 * 1024 - 64)

    one = fn ->
      audience = Audience.new()
      :ok = Audience.add(audience, self(), huge, [])
      audience
    end

    many = fn ->
      audience = Audience.new()
      pids = FakePids.pids(:"ghost@127.0.0.1", @sessions)

      for {pid, i} <- Enum.with_index(pids),
          do: :ok = Audience.add(audience, pid, :binary.copy(<<i::32>>, 50), [])

      {audience, pids}
    end

    assert LongSchedule.assert_no_long_schedule(one, &Audience.remove(&1, self())) == :ok

    removed =
      LongSchedule.assert_no_long_schedule(many, fn {audience, pids} ->
        {kept, gone} = Enum.split(pids, 1)
        for pid <- gone, do: :ok = Audience.remove(audience, pid)
        {Audience.size(audience), Audience.member?(audience, hd(kept))}
      end)

    assert removed == {1, true}
  end
end

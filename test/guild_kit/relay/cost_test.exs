defmodule GuildKit.Relay.CostTest do
  # Relays are cheap: creating one and connecting 15,000 sessions to it never holds the
  # guild 5 ms at a time (long_schedule on the guild process), whatever the guild holds
  # (here a million members), and a relay takes at most 300 bytes of native and heap
  # memory per session.
  use ExUnit.Case, async: false

  alias GuildKit.{Audience, Permissions, Relay}
  alias GuildKit.Test.{LongSchedule, SchedulerWatch}

  @moduletag :slow
  @sessions 15_000

  setup_all do
    roles = Map.new(1..100, &{&1, 0})

    perms =
      Enum.reduce(1..50, Permissions.new(everyone: 0x400, roles: roles), fn c, p ->
        Permissions.put_channel(p, c, [{:role, c, 0, 0x400}, {:role, c + 50, 0x400, 0}])
      end)

    pids = for _ <- 1..@sessions, do: spawn(fn -> receive do: (:stop -> :ok) end)
    on_exit(fn -> Enum.each(pids, &send(&1, :stop)) end)
    %{perms: perms, pids: pids}
  end

  test "a relay with 15,000 sessions: created without holding the guild", %{
    perms: perms,
    pids: pids
  } do
    :rand.seed(:exsss, {14, 14, 14})

    people =
      for {pid, i} <- Enum.with_index(pids),
          do: {pid, i, Enum.take_random(1..100, :rand.uniform(6) - 1)}

    # The rule of every scheduler check of the suite: a guild that holds its scheduler
    # does so on every run, a stretch the machine made long seldom comes in each.
    {reports, {heap, native}} =
      LongSchedule.retried(3, fn -> run_guild(perms, people) end, &match?({[], _}, &1))

    assert reports == [], "the guild was held: #{inspect(reports)}"
    per_session = (heap + native) / @sessions

    IO.puts(
      "relay memory: #{Float.round(per_session, 1)} bytes a session (heap #{heap}, native #{native})"
    )

    assert per_session <= 300
  end

  # Runs the guild once: the scheduler reports about it, and its relay's memory.
  defp run_guild(perms, people) do
    parent = self()

    # The guild: its input built first in a heap big enough not to be collected, as
    # GuildKit.Test.LongSchedule does; its own state holds a million members it never
    # hands to a relay.
    guild =
      :erlang.spawn_opt(
        fn ->
          members = Map.new(1..1_000_000, &{&1, %{name: "m#{&1}"}})
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)
          relays = Relay.new(:cheap, permissions: perms)

          relays =
            Enum.reduce(people, relays, fn {pid, id, roles}, relays ->
              {:ok, relays} = Relay.connect(relays, pid, id, roles, active: rem(id, 10) == 0)
              relays
            end)

          # The last commands go out with the first event.
          {_seq, relays} = Relay.dispatch(relays, :first, to: {:channel, 1})
          [relay] = Relay.stats(relays).relays
          send(parent, {:done, relay, map_size(members)})
          receive do: (:stop -> :ok)
        end,
        min_heap_size: 40_000_000
      )

    receive do: ({:ready, ^guild} -> :ok)
    watch = SchedulerWatch.start(:no_fanout, [guild], 5)
    send(guild, :go)
    relay = receive do: ({:done, relay, 1_000_000} -> relay)
    reports = SchedulerWatch.stop(watch)
    # Measured while the guild lives: relays stop with it.
    memory = relay_memory(relay)
    send(guild, :stop)
    {reports, memory}
  end

  # The relay's heap (its sessions' monitors included) and its audience's native memory,
  # once it has handled the first event, read inside it.
  defp relay_memory(relay) do
    me = self()

    :sys.replace_state(relay, fn state ->
      send(me, {:seen, state.seq, Audience.memory(state.audience)})
      state
    end)

    receive do
      {:seen, 0, _native} ->
        Process.sleep(10)
        relay_memory(relay)

      {:seen, _seq, native} ->
        :erlang.garbage_collect(relay)
        {:memory, heap} = Process.info(relay, :memory)
        {heap, native}
    end
  end
end

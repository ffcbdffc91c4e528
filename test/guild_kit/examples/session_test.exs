defmodule GuildKit.Examples.SessionTest do
  use ExUnit.Case, async: false

  alias GuildKit.Examples.Session

  # A guild that only answers connects, with a 100-row window.
  defp fake_guild do
    receive do
      {:"$gen_call", from, {:connect, _user_id, _pid, _window}} ->
        GenServer.reply(from, {:ok, for(i <- 1..100, do: {:member, i})})
        fake_guild()
    end
  end

  defp await_empty_mailboxes(pids) do
    if Enum.any?(pids, &(Process.info(&1, :message_queue_len) != {:message_queue_len, 0})) do
      Process.sleep(1)
      await_empty_mailboxes(pids)
    else
      :ok
    end
  end

  @tag :slow
  test "active sessions fed the same events do not all collect garbage on the same one" do
    guild = spawn_link(&fake_guild/0)
    sessions = 2_000
    stats = Session.Stats.new(1_000)

    pids =
      for user <- 1..sessions do
        {:ok, pid} = Session.start(guild, user, watch: {0, 99}, stats: stats)
        pid
      end

    await_empty_mailboxes(pids)

    collections =
      for seq <- 1..120 do
        {before, _, _} = :erlang.statistics(:garbage_collection)
        event = {:guild_event, guild, seq, :os.perf_counter(:nanosecond), {:presence, 1, :online}}
        Enum.each(pids, &send(&1, event))
        await_empty_mailboxes(pids)
        {later, _, _} = :erlang.statistics(:garbage_collection)
        later - before
      end

    # Every session did collect during the events (their heaps fill every few dozen).
    assert Enum.sum(collections) >= sessions
    # Identical sessions all collected on one event in every ~30 before their collections
    # were desynchronized; now no event sees even half of them collect.
    assert Enum.max(collections) < sessions / 2, inspect(collections)
    Enum.each(pids, &Process.exit(&1, :kill))
  end
end

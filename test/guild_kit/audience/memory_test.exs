defmodule GuildKit.Audience.MemoryTest do
  @moduledoc """
  Native memory of a relay's audience: 15,000 sessions of members holding 0-5 of 100
  roles, with 50 channels cached, take at most 64 bytes plus 8 per role held per
  session, as `Audience.memory/1` and the counting allocator both see it; and all of
  it comes back when the audience is dropped.
  """
  use ExUnit.Case, async: false
  alias GuildKit.{Audience, Permissions}
  alias GuildKit.Test.NativeMemory

  @moduletag :slow
  @sessions 15_000

  test "a session takes at most 64 bytes plus 8 per role" do
    :rand.seed(:exsss, {15, 0, 0})

    perms =
      Enum.reduce(1..50, Permissions.new(everyone: 0x400, roles: Map.new(1..100, &{&1, 0})), fn c,
                                                                                                p ->
        Permissions.put_channel(p, c, [{:role, c, 0, 0x400}, {:role, c + 50, 0x400, 0}])
      end)

    pids = for _ <- 1..@sessions, do: spawn(fn -> receive do: (:stop -> :ok) end)

    people =
      for {pid, id} <- Enum.with_index(pids),
          do: {pid, id, Enum.take_random(1..100, :rand.uniform(6) - 1)}

    roles_held = Enum.sum(for {_, _, roles} <- people, do: length(roles))
    budget = 64 * @sessions + 8 * roles_held

    start = NativeMemory.settled()

    task =
      Task.async(fn ->
        before = NativeMemory.settled()
        audience = Audience.new()
        for {pid, id, roles} <- people, do: Audience.add(audience, pid, id, roles)
        for c <- 1..50, do: Audience.select(audience, perms, {:channel, c})
        # Measured while the audience is alive: it is used after.
        counted = NativeMemory.settled() - before
        {Audience.memory(audience), counted}
      end)

    {reported, counted} = Task.await(task, 60_000)
    assert reported <= budget, "Audience.memory/1: #{reported / @sessions} bytes a session"
    assert counted <= budget, "native memory: #{counted / @sessions} bytes a session"
    assert_in_delta counted, reported, reported * 0.1

    # The task's exit dropped the audience (on the reaper thread): it all comes back.
    Enum.each(pids, &send(&1, :stop))
    left = NativeMemory.await_at_most(start + 64 * 1024) - start
    assert left <= 64 * 1024, "#{left} bytes still held after the audience was dropped"
  end
end

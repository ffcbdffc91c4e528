defmodule GuildKit.Fanout.WorkerCrashTest do
  # Killing workers never loses or repeats a message. Not async: it kills the shared
  # workers and checks exact counters.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.Receivers

  defp partitioner, do: Process.whereis(Runtime.partitioner_name(0))

  # The workers, once each bucket has one (a killed one is replaced within
  # microseconds).
  defp workers do
    workers = partitioner() |> :sys.get_state() |> Map.fetch!(:workers) |> Tuple.to_list()

    if Enum.all?(workers, &is_pid/1) do
      workers
    else
      Process.sleep(1)
      workers()
    end
  end

  defp kill_all_workers do
    old = workers()
    Enum.each(old, &Process.exit(&1, :kill))
    old
  end

  test "workers killed between sends lose nothing and are replaced" do
    {group, pids} = Receivers.start(2_000)
    before = Fanout.stats()

    :ok = Fanout.send(pids, :first)
    Receivers.await(group, 2_000)
    old = kill_all_workers()
    # Sent at once: the partitioner may not have seen the deaths yet and hand these to
    # the dead workers; it must replay them to the new ones.
    :ok = Fanout.send(pids, :second)
    :ok = Fanout.send(pids, :third, offload: true)
    :ok = Fanout.send(Enum.take(pids, 1), :fourth)

    results = Receivers.await(group, 3 * 2_000 + 1)
    [{_first_pid, first_messages} | rest] = results
    assert first_messages == [:first, :second, :third, :fourth]
    assert Enum.all?(rest, fn {_pid, messages} -> messages == [:first, :second, :third] end)

    new = workers()
    assert length(new) == length(old)
    assert Enum.all?(new, &Process.alive?/1)
    assert MapSet.disjoint?(MapSet.new(new), MapSet.new(old))

    now = Fanout.stats()
    assert now.worker_restarts - before.worker_restarts == length(old)
    assert now.sent - before.sent == 4
    # Replays are not counted again.
    assert now.delivered_to_workers - before.delivered_to_workers == 3 * 2_000 + 1
    assert now.dropped == before.dropped
    Receivers.stop(group)
  end

  test "a worker killed between sends, the next send being a single pid" do
    {group, [pid]} = Receivers.start(1)

    for i <- 1..20 do
      kill_all_workers()
      :ok = Fanout.send(pid, i)
    end

    assert [{^pid, messages}] = Receivers.await(group, 20)
    assert messages == Enum.to_list(1..20)
    Receivers.stop(group)
  end

  @tag :slow
  test "workers killed in the middle of large batches skip nobody and repeat nobody" do
    {group, pids} = Receivers.start(60_000)
    kills = 6

    :ok = Fanout.send(pids, :big)
    :ok = Fanout.send(pids, :big2, offload: true)

    # Kill while the workers are busy delivering; whether a kill lands mid-batch or
    # between batches depends on timing, and either way nobody may be skipped, and
    # nobody served twice: a batch counts what was served, and a process is never
    # killed in the middle of the NIF call that serves it.
    for _ <- 1..kills do
      kill_all_workers()
      Process.sleep(2)
    end

    :ok = Fanout.send(pids, :after)
    results = Receivers.await(group, 3 * 60_000)
    assert Enum.all?(results, fn {_pid, messages} -> messages == [:big, :big2, :after] end)
    Receivers.stop(group)
  end
end

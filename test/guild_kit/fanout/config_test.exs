defmodule GuildKit.Fanout.ConfigTest do
  # Process counts come from the application environment when the application starts.
  # Not async: it restarts the application.
  use ExUnit.Case, async: false

  # Restarting the application logs a notice each time.
  @moduletag :capture_log

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.{FakePids, Receivers}

  setup do
    saved = Application.get_env(:guild_kit, Fanout)

    on_exit(fn ->
      if saved,
        do: Application.put_env(:guild_kit, Fanout, saved),
        else: Application.delete_env(:guild_kit, Fanout)

      restart()
    end)
  end

  defp restart do
    :ok = Application.stop(:guild_kit)
    {:ok, _} = Application.ensure_all_started(:guild_kit)
  end

  defp worker_count(index) do
    Runtime.partitioner_name(index) |> :sys.get_state() |> Map.fetch!(:workers) |> tuple_size()
  end

  test "defaults to one worker and one sender per scheduler, one partitioner" do
    Application.delete_env(:guild_kit, Fanout)
    restart()
    runtime = Runtime.get()
    assert tuple_size(runtime.senders) == System.schedulers_online()
    assert runtime.workers == System.schedulers_online()
    assert runtime.partitioners == 1
    assert worker_count(0) == System.schedulers_online()
    assert Process.whereis(Runtime.partitioner_name(1)) == nil
  end

  test "counts set at run time take effect on restart, and fan-out works with them" do
    Application.put_env(:guild_kit, Fanout, senders: 3, partitioners: 2, workers: 5)
    restart()
    assert tuple_size(Runtime.get().senders) == 3
    assert worker_count(0) == 5
    assert worker_count(1) == 5
    assert Enum.all?(0..2, &Process.whereis(Runtime.sender_name(&1)))

    {group, pids} = Receivers.start(1_000)

    # From several callers, which spread over the senders (and their partitioners).
    1..12
    |> Enum.map(fn caller -> Task.async(fn -> Fanout.send(pids, {:from, caller}) end) end)
    |> Enum.each(&Task.await/1)

    for {_pid, messages} <- Receivers.await(group, 12 * 1_000) do
      assert Enum.sort(messages) == for(caller <- 1..12, do: {:from, caller})
    end

    Receivers.stop(group)
  end

  test "a partitioner given buckets for another worker count splits them again" do
    # What a sender may hold when the component restarts with a new count.
    Application.put_env(:guild_kit, Fanout, workers: 3)
    restart()
    {group, pids} = Receivers.start(20)
    partitioner = Process.whereis(Runtime.partitioner_name(0))
    send(partitioner, {:guild_kit_fanout_buckets, {pids}, {20}, 20, {:term, :resplit}})
    assert Enum.all?(Receivers.await(group, 20), fn {_, messages} -> messages == [:resplit] end)
    Receivers.stop(group)
  end

  test "stats count sends, receivers handed to workers, and pids of this node's earlier runs" do
    restart()
    before = Fanout.stats()
    {group, pids} = Receivers.start(300)
    # Same node name, another creation: processes of an earlier run of this node.
    stale = FakePids.pids(node(), 7)

    :ok = Fanout.send(pids ++ [nil | stale], :a)
    :ok = Fanout.send(stale ++ pids, :b, offload: true)
    Receivers.await(group, 600)
    for name <- Tuple.to_list(Runtime.get().senders), do: :sys.get_state(name)

    now = Fanout.stats()
    assert now.sent - before.sent == 2
    assert now.delivered_to_workers - before.delivered_to_workers == 600
    assert now.dropped - before.dropped == 14
    assert now.worker_restarts == before.worker_restarts
    Receivers.stop(group)
  end

  test "bad configuration raises ArgumentError naming the value" do
    for {config, message} <- [
          {[workers: 0], "expected :workers to be an integer in 1..65536, got: 0"},
          {[senders: :many], "expected :senders to be an integer in 1..1024, got: :many"},
          {[partitioners: 2.0], "expected :partitioners to be an integer in 1..1024, got: 2.0"},
          {[worker: 2], "unknown keys [:worker]"},
          {:fast, "expected config :guild_kit, GuildKit.Fanout to be a keyword list, got: :fast"}
        ] do
      Application.put_env(:guild_kit, Fanout, config)
      error = assert_raise ArgumentError, fn -> Runtime.from_env!() end
      assert Exception.message(error) =~ message
    end
  end
end

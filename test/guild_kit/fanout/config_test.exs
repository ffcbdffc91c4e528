defmodule GuildKit.Fanout.ConfigTest do
  # The two ways to start fan-out: the application's instance, configured by the
  # application environment when the application starts, and instances in the user's
  # own supervision tree. Not async: it restarts the application.
  use ExUnit.Case, async: false

  # Restarting the application logs a notice each time.
  @moduletag :capture_log

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.{FakePids, Receivers}

  setup do
    saved =
      {Application.get_env(:guild_kit, Fanout), Application.get_env(:guild_kit, :start_fanout)}

    on_exit(fn ->
      {fanout, start} = saved
      restore(Fanout, fanout)
      restore(:start_fanout, start)
      restart()
    end)
  end

  defp restore(key, nil), do: Application.delete_env(:guild_kit, key)
  defp restore(key, value), do: Application.put_env(:guild_kit, key, value)

  defp restart do
    # A test may have left it stopped.
    _ = Application.stop(:guild_kit)
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
    assert tuple_size(runtime.partitioners) == 1
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

    # From several callers, which spread over the partitioners.
    1..12
    |> Enum.map(fn caller -> Task.async(fn -> Fanout.send(pids, {:from, caller}) end) end)
    |> Enum.each(&Task.await/1)

    for {_pid, messages} <- Receivers.await(group, 12 * 1_000) do
      assert Enum.sort(messages) == for(caller <- 1..12, do: {:from, caller})
    end

    Receivers.stop(group)
  end

  test "a partitioner given batches for another worker count splits them again" do
    # What a partitioner may get while the instance restarts with a new count.
    Application.put_env(:guild_kit, Fanout, workers: 3)
    restart()
    {group, pids} = Receivers.start(20)
    {:ok, batches, nil} = GuildKit.Fanout.Split.split(pids, 7)
    message = GuildKit.Native.fanout_message(:resplit)
    partitioner = Process.whereis(Runtime.partitioner_name(0))
    send(partitioner, {:guild_kit_fanout_local, 7, batches, message})
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
    context = "bad config :guild_kit, GuildKit.Fanout: "

    for {config, message} <- [
          {[workers: 0], "expected :workers to be an integer in 1..65536, got: 0"},
          {[senders: :many], "expected :senders to be an integer in 1..1024, got: :many"},
          {[partitioners: 2.0], "expected :partitioners to be an integer in 1..1024, got: 2.0"},
          {[worker: 2], "unknown keys [:worker]"},
          {:fast, "expected options to be a keyword list, got: :fast"}
        ] do
      error = assert_raise ArgumentError, fn -> Runtime.options!(config, context) end
      assert Exception.message(error) =~ context <> message

      # The same options, given at start, raise without the prefix.
      error = assert_raise ArgumentError, fn -> Fanout.child_spec(config) end
      assert Exception.message(error) =~ message
    end

    # The application refuses to start with a bad config, and says why.
    Application.put_env(:guild_kit, Fanout, workers: 0)
    :ok = Application.stop(:guild_kit)
    assert {:error, {:guild_kit, reason}} = Application.ensure_all_started(:guild_kit)
    assert inspect(reason) =~ "expected :workers to be an integer in 1..65536, got: 0"
  end

  test "after the application stops, send/3 raises at once and sends nothing" do
    restart()
    {group, pids} = Receivers.start(100)
    :ok = Application.stop(:guild_kit)

    for opts <- [[], [offload: true], [pack: :binary]] do
      {micros, _} =
        :timer.tc(fn ->
          for _ <- 1..20 do
            assert_raise ArgumentError, ~r/GuildKit.Fanout is not running/, fn ->
              Fanout.send(pids, :late, opts)
            end
          end
        end)

      # 20 calls: microseconds each, not a 50 ms wait each for processes that will not
      # come back (a second in all).
      assert micros < 500_000
    end

    assert_raise ArgumentError, ~r/not running/, fn -> Fanout.send([], :late) end
    # The counters survive the stop and still read.
    assert %{sent: _} = Fanout.stats()
    {:ok, _} = Application.ensure_all_started(:guild_kit)
    Process.sleep(50)
    assert Receivers.received(group) == 0
    Receivers.stop(group)
  end

  test "start_fanout: false leaves fan-out to the user's tree, where it runs by name" do
    Application.put_env(:guild_kit, :start_fanout, false)
    restart()
    assert Process.whereis(Fanout.Supervisor) == nil
    assert Process.whereis(Runtime.partitioner_name(0)) == nil
    assert_raise ArgumentError, ~r/not running/, fn -> Fanout.send(self(), :x) end

    children = [
      {Fanout, name: ConfigTest.Events, workers: 3, senders: 1},
      {Fanout, name: ConfigTest.Presence, workers: 1, partitioners: 2}
    ]

    {:ok, tree} = Supervisor.start_link(children, strategy: :one_for_one)

    assert [{ConfigTest.Presence, _, :supervisor, _}, {ConfigTest.Events, _, :supervisor, _}] =
             Supervisor.which_children(tree)

    {group, pids} = Receivers.start(50)
    :ok = Fanout.send(pids, :events, name: ConfigTest.Events)
    :ok = Fanout.send(pids, :presence, name: ConfigTest.Presence, offload: true)

    for {_pid, messages} <- Receivers.await(group, 100) do
      assert Enum.sort(messages) == [:events, :presence]
    end

    assert Fanout.stats(ConfigTest.Events).delivered_to_workers == 50
    assert Fanout.stats(ConfigTest.Presence).delivered_to_workers == 50
    assert Runtime.fetch!(ConfigTest.Events).workers == 3

    Supervisor.stop(tree)

    assert_raise ArgumentError, ~r/ConfigTest.Events is not running/, fn ->
      Fanout.send(pids, :late, name: ConfigTest.Events)
    end

    Receivers.stop(group)
  end
end

defmodule GuildKit.Fanout.PartitionerKeyTest do
  # Fan-out order across processes that share a partitioner key: once one process's
  # send/3 has returned, whatever another process sends under the same key reaches
  # each receiver after it, in every mode (a guild handing itself over to a new
  # process). The instance has several partitioners and senders, so that processes
  # without a shared key would go through different chains.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.{FanoutFaults, Receivers, TermGenerator}

  @modes [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]]

  setup do
    name = Module.concat(__MODULE__, "F#{System.unique_integer([:positive])}")
    start_supervised!({Fanout, name: name, partitioners: 8, senders: 8, workers: 3})
    %{name: name}
  end

  # The partitioner got a send's receivers: split into batches by the caller, or, for a
  # few receivers and a small message, as a list. What its workers tell it (that they
  # started, that they served a batch) can come in between.
  defp assert_handed_to(partitioner) do
    assert_receive {:trace, ^partitioner, :receive, handed}, 5_000

    if match?({:guild_kit_fanout_local, _, _, _}, handed) or
         match?({:guild_kit_fanout_receivers, _, {:term, _}}, handed),
       do: :ok,
       else: assert_handed_to(partitioner)
  end

  defp assert_in_order(group, count, receivers) do
    expected = for seq <- 1..count, do: {:seq, seq}

    for {_pid, messages} <- Receivers.await(group, count * receivers, 60_000) do
      assert messages == expected
    end
  end

  test "set_partitioner_key/1: alternating processes keep one order, in every mode",
       %{name: name} do
    TermGenerator.seed!("partitioner key", 12_003)
    {group, pids} = Receivers.start(300)

    FanoutFaults.relay(
      pids,
      400,
      4,
      fn _ -> Fanout.set_partitioner_key({:guild, 42}) end,
      fn _ -> [name: name] ++ Enum.random(@modes) end
    )

    assert_in_order(group, 400, 300)
    Receivers.stop(group)
  end

  test "the key: option does the same for one call, and overrides a key set before",
       %{name: name} do
    {group, pids} = Receivers.start(200)

    FanoutFaults.relay(
      pids,
      300,
      3,
      # Each process sets a key of its own, which every call overrides.
      fn s -> Fanout.set_partitioner_key({:own, s}) end,
      fn seq -> [name: name, key: "guild-7"] ++ Enum.at(@modes, rem(seq, 4)) end
    )

    assert_in_order(group, 300, 200)
    Receivers.stop(group)
  end

  test "a hand-off: the old process stops, a new one takes over the key", %{name: name} do
    {group, pids} = Receivers.start(500)
    parent = self()

    old =
      spawn_link(fn ->
        Fanout.set_partitioner_key(:guild)
        for seq <- 1..100, do: :ok = Fanout.send(pids, {:seq, seq}, name: name, offload: true)
        send(parent, :handed_off)
      end)

    assert_receive :handed_off, 10_000
    ref = Process.monitor(old)
    assert_receive {:DOWN, ^ref, :process, ^old, _}

    spawn_link(fn ->
      Fanout.set_partitioner_key(:guild)
      for seq <- 101..200, do: :ok = Fanout.send(pids, {:seq, seq}, name: name)
      send(parent, :done)
    end)

    assert_receive :done, 10_000
    assert_in_order(group, 200, 500)
    Receivers.stop(group)
  end

  test "one key, one partitioner, from any process and in every mode", %{name: name} do
    runtime = Runtime.fetch!(name)
    index = :erlang.phash2({:guild, 42}, tuple_size(runtime.partitioners))
    partitioner = Process.whereis(elem(runtime.partitioners, index))
    :erlang.trace(partitioner, true, [:receive])
    {group, pids} = Receivers.start(10)

    for mode <- @modes do
      Task.async(fn -> Fanout.send(pids, :traced, [name: name, key: {:guild, 42}] ++ mode) end)
      |> Task.await()
    end

    for _ <- @modes, do: assert_handed_to(partitioner)

    :erlang.trace(partitioner, false, [:receive])
    Receivers.await(group, 40)
    Receivers.stop(group)
  end

  test "set_partitioner_key(nil) goes back to the calling process's own chain", %{name: name} do
    runtime = Runtime.fetch!(name)
    {group, pids} = Receivers.start(5)

    # Each sends from a fresh process, whose chain the trace then shows.
    traced = fn key, expected_index ->
      partitioner = Process.whereis(elem(runtime.partitioners, expected_index))
      :erlang.trace(partitioner, true, [:receive])
      :ok = Fanout.set_partitioner_key(key)
      :ok = Fanout.send(pids, :x, name: name)
      assert_handed_to(partitioner)
      :erlang.trace(partitioner, false, [:receive])
    end

    count = tuple_size(runtime.partitioners)
    traced.(:a_key, :erlang.phash2(:a_key, count))
    traced.(nil, :erlang.phash2(self(), count))
    Receivers.await(group, 10)
    Receivers.stop(group)
  end
end

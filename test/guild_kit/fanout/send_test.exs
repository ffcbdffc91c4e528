defmodule GuildKit.Fanout.SendTest do
  # Fan-out on this node: exactly once, in order in every mode and across modes.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout
  alias GuildKit.Test.{Receivers, TermGenerator}

  doctest GuildKit.Fanout

  @modes [
    default: [],
    pack: [pack: :binary],
    offload: [offload: true],
    offload_pack: [offload: true, pack: :binary]
  ]

  test "10,000+ receivers each get each message exactly once, duplicates twice" do
    {group, pids} = Receivers.start(12_000)
    twice = Enum.take_every(pids, 7)
    # nils are skipped; a pid listed twice gets the message twice, as with send/2.
    receivers = Enum.shuffle(pids ++ twice ++ List.duplicate(nil, 100))

    for {mode, opts} <- @modes, do: :ok = Fanout.send(receivers, {:event, mode}, opts)

    twice = MapSet.new(twice)
    expected_total = length(@modes) * (length(pids) + MapSet.size(twice))

    for {pid, messages} <- Receivers.await(group, expected_total) do
      copies = if MapSet.member?(twice, pid), do: 2, else: 1
      expected = for {mode, _} <- @modes, _ <- 1..copies, do: {:event, mode}
      assert messages == expected
    end

    Receivers.stop(group)
  end

  test "sends whose batches reuse the memory of earlier ones reach only their own receivers" do
    {group, pids} = Receivers.start(9_000)
    # Whole chunks of 4,096 pids and part-filled ones, given back between sends (the
    # collection drops the earlier batches) and reused by later, shorter and longer ones.
    sizes = [9_000, 10, 4_097, 1, 8_192, 300, 9_000]

    expected =
      for {size, round} <- Enum.with_index(sizes), {_mode, opts} <- @modes do
        receivers = Enum.take(Enum.shuffle(pids), size)
        :ok = Fanout.send(receivers, {:round, round, opts}, opts)
        :erlang.garbage_collect()
        {receivers, {:round, round, opts}}
      end

    wanted =
      Enum.reduce(Enum.reverse(expected), %{}, fn {receivers, message}, acc ->
        Enum.reduce(receivers, acc, fn pid, acc ->
          Map.update(acc, pid, [message], &[message | &1])
        end)
      end)

    total = Enum.sum(for {receivers, _} <- expected, do: length(receivers))

    for {pid, messages} <- Receivers.await(group, total) do
      assert Enum.sort(messages) == Enum.sort(Map.get(wanted, pid, []))
    end

    Receivers.stop(group)
  end

  for {mode, opts} <- @modes do
    @tag :slow
    test "1,000 messages to 1,000 receivers arrive in order (#{mode})" do
      assert_in_order(fn _message -> unquote(opts) end)
    end
  end

  @tag :slow
  test "order holds when one sender mixes all modes" do
    modes = Keyword.values(@modes)
    assert_in_order(fn _message -> Enum.random(modes) end)
  end

  # Sends 1,000 messages to 1,000 receivers, each with the options `opts_for` picks and
  # to the receivers in a new random order, and checks every receiver got all in order.
  defp assert_in_order(opts_for) do
    TermGenerator.seed!("order test", 20_261_123)
    {group, pids} = Receivers.start(1_000)

    for i <- 1..1_000 do
      :ok = Fanout.send(Enum.shuffle(pids), {:seq, i}, opts_for.(i))
    end

    expected = for i <- 1..1_000, do: {:seq, i}
    results = Receivers.await(group, 1_000_000, 120_000)
    assert Enum.all?(results, fn {_pid, messages} -> messages == expected end)
    Receivers.stop(group)
  end

  test "order holds per sender when several senders share receivers" do
    {group, pids} = Receivers.start(500)
    senders = 8

    tasks =
      for s <- 1..senders do
        Task.async(fn ->
          for i <- 1..100,
              do: Fanout.send(pids, {s, i}, Enum.at(Keyword.values(@modes), rem(i, 4)))
        end)
      end

    Enum.each(tasks, &Task.await(&1, 60_000))

    for {_pid, messages} <- Receivers.await(group, 500 * senders * 100) do
      # Interleaved across senders, in order within each.
      for s <- 1..senders do
        assert for({^s, i} <- messages, do: i) == Enum.to_list(1..100)
      end
    end

    Receivers.stop(group)
  end

  test "a single pid, nil, and an empty list" do
    :ok = Fanout.send(self(), :one)
    assert_receive :one
    :ok = Fanout.send(self(), :two, offload: true)
    assert_receive :two
    assert Fanout.send(nil, :nobody) == :ok
    assert Fanout.send([], :nobody, offload: true) == :ok
    assert Fanout.send([nil, nil], :nobody) == :ok
    refute_receive :nobody, 100
  end

  # The next message the partitioner was handed, past its workers' start notices (a
  # worker started with the instance may announce itself late).
  defp next_handed(partitioner) do
    assert_receive {:trace, ^partitioner, :receive, handed}, 5_000

    if match?({:guild_kit_fanout_worker, _, _}, handed),
      do: next_handed(partitioner),
      else: handed
  end

  test "a few receivers and a small message skip the caller's NIF split; others do not" do
    name = Module.concat(__MODULE__, "F#{System.unique_integer([:positive])}")
    start_supervised!({Fanout, name: name, partitioners: 1, workers: 2})
    [partitioner] = Tuple.to_list(GuildKit.Fanout.Runtime.fetch!(name).partitioners)
    partitioner = Process.whereis(partitioner)
    {group, pids} = Receivers.start(40)
    [one | _] = pids

    cases = [
      {Enum.take(pids, 32), {:event, "small", [1, 2.0, self(), make_ref(), %{a: 1}]}, :list},
      {[one, nil], :binary.copy("x", 1_000), :list},
      {Enum.take(pids, 33), :small, :batches},
      {[one], Enum.to_list(1..300), :batches},
      {[one], :binary.copy("x", 4_000), :batches},
      {[one], Tuple.duplicate(0, 1_000_000), :batches},
      {[one], Map.new(1..200, &{&1, &1}), :batches},
      {[one], {:bignum, Bitwise.bsl(1, 70)}, :batches},
      {[one], fn -> :a_fun end, :batches},
      {[one], :small, :offloaded, [offload: true]}
    ]

    :erlang.trace(partitioner, true, [:receive])

    for test_case <- cases do
      {receivers, message, path, opts} =
        case test_case do
          {receivers, message, path} -> {receivers, message, path, []}
          full -> full
        end

      :ok = Fanout.send(receivers, message, [name: name] ++ opts)
      handed = next_handed(partitioner)

      case path do
        :list ->
          assert {:guild_kit_fanout_receivers, list, {:term, ^message}} = handed
          assert Enum.sort(list) == receivers |> Enum.reject(&is_nil/1) |> Enum.sort()

        :batches ->
          assert {:guild_kit_fanout_local, 2, _batches, _message} = handed

        :offloaded ->
          assert {:guild_kit_fanout_local, 1, _batches, _message} = handed
      end
    end

    :erlang.trace(partitioner, false, [:receive])

    total =
      cases |> Enum.map(&length(Enum.reject(elem(&1, 0), fn pid -> pid == nil end))) |> Enum.sum()

    received = Receivers.await(group, total)
    assert {^one, [_ | _] = for_one} = List.keyfind(received, one, 0)
    assert length(for_one) == length(cases)
    Receivers.stop(group)
  end

  test "a packed message arrives equal to the original" do
    message = %{
      map: Map.new(1..100, &{&1, "v#{&1}"}),
      bin: :binary.copy("x", 5_000),
      ref: make_ref()
    }

    {group, pids} = Receivers.start(50)
    :ok = Fanout.send(pids, message, pack: :binary)
    :ok = Fanout.send(pids, message, pack: :binary, offload: true)

    for {_pid, messages} <- Receivers.await(group, 100) do
      assert messages == [message, message]
    end

    Receivers.stop(group)
  end
end

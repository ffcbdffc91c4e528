defmodule GuildKit.Fanout.SplitTest do
  # The NIF split that every send runs: worker batches by phash2, remote pids apart.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout.Split
  alias GuildKit.Native
  alias GuildKit.Test.FakePids

  setup_all do
    pids = for _ <- 1..2_000, do: spawn(fn -> Process.sleep(:infinity) end)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)
    %{pids: pids}
  end

  # Partition counts: every count up to 64, and a spread of larger ones up to the limit.
  @counts Enum.to_list(1..64) ++
            [97, 100, 127, 128, 255, 256, 1000, 1024, 4095, 4096, 65_535, 65_536]

  # The split's batches as {bucket, pids}, checking each batch's count.
  defp buckets(batches) do
    for {index, batch, count} <- batches do
      pids = Native.fanout_batch_pids(batch)
      assert length(pids) == count
      {index, pids}
    end
  end

  defp remote_pids(nil), do: []

  defp remote_pids({list, count}) do
    {pids, true} = Native.fanout_remote_take(list)
    assert length(pids) == count
    pids
  end

  test "a local pid's bucket is rem(:erlang.phash2(pid), workers) for every count", %{pids: pids} do
    for workers <- @counts do
      {:ok, batches, nil} = Split.split(pids, workers)
      buckets = buckets(batches)
      assert buckets |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> length() == length(buckets)
      assert Enum.sum(for {_, bucket} <- buckets, do: length(bucket)) == length(pids)

      for {index, bucket} <- buckets do
        assert index in 0..(workers - 1)
        assert bucket != []
        assert Enum.all?(bucket, &(rem(:erlang.phash2(&1), workers) == index))
      end
    end
  end

  test "for power-of-two counts the bucket equals :erlang.phash2(pid, workers)", %{pids: pids} do
    for bits <- 0..16, workers = 2 ** bits do
      {:ok, batches, nil} = Split.split(pids, workers)

      for {index, bucket} <- buckets(batches), pid <- bucket do
        assert :erlang.phash2(pid, workers) == index
      end
    end
  end

  test "keeps duplicates, skips nils, and lists each bucket in input order", %{pids: pids} do
    sample = Enum.take(pids, 50)
    receivers = Enum.intersperse(sample ++ Enum.take(sample, 10), nil)
    {:ok, batches, nil} = Split.split(receivers, 4)

    for {index, bucket} <- buckets(batches) do
      expected =
        (sample ++ Enum.take(sample, 10)) |> Enum.filter(&(rem(:erlang.phash2(&1), 4) == index))

      assert bucket == expected
    end
  end

  test "sets other nodes' pids apart, each once", %{pids: pids} do
    ghosts = FakePids.pids(:"ghost@127.0.0.1", 5) ++ FakePids.pids(:"other@127.0.0.1", 3)
    receivers = Enum.zip(Enum.take(pids, 8), ghosts) |> Enum.flat_map(&Tuple.to_list/1)
    {:ok, batches, remote} = Split.split(receivers, 2)
    assert Enum.sort(remote_pids(remote)) == Enum.sort(ghosts)
    assert Enum.sum(for {_, _, count} <- batches, do: count) == 8
  end

  test "remote pids are read back in bounded chunks, every one once" do
    ghosts = FakePids.pids(:"ghost@127.0.0.1", 40_000)
    {:ok, [], {list, 40_000}} = Split.split(ghosts, 2)
    chunks = Stream.repeatedly(fn -> Native.fanout_remote_take(list) end)

    {taken, _} =
      Enum.reduce_while(chunks, {[], 0}, fn {pids, done}, {taken, calls} ->
        assert length(pids) <= 4_096
        if done, do: {:halt, {[pids | taken], calls}}, else: {:cont, {[pids | taken], calls + 1}}
      end)

    assert taken |> Enum.concat() |> Enum.sort() == Enum.sort(ghosts)
    # Once drained, the list stays empty.
    assert Native.fanout_remote_take(list) == {[], true}
  end

  test "splits the same in one slice and in many", %{pids: pids} do
    # A slice walks 8,192 receivers; longer lists take several NIF calls.
    for size <- [0, 1, 8_191, 8_192, 8_193, 20_000] do
      receivers = pids |> Stream.cycle() |> Enum.take(size)
      {:ok, batches, nil} = Split.split(receivers, 3)
      buckets = buckets(batches)

      for {index, bucket} <- buckets do
        assert bucket == Enum.filter(receivers, &(rem(:erlang.phash2(&1), 3) == index))
      end

      assert buckets |> Enum.flat_map(&elem(&1, 1)) |> Enum.sort() == Enum.sort(receivers)
    end
  end

  test "a one-worker split keeps the input order, and a partitioner splits it later",
       %{pids: pids} do
    receivers = pids |> Stream.cycle() |> Enum.take(30_000)
    {:ok, [{0, batch, 30_000}], nil} = Split.split(receivers, 1)
    assert Native.fanout_batch_pids(batch) == receivers
    # Past 16,384 pids the partition moves to a dirty scheduler; the result is the same.
    resplit = batch |> Native.fanout_partition(5) |> buckets()

    for {index, bucket} <- resplit do
      assert bucket == Enum.filter(receivers, &(rem(:erlang.phash2(&1), 5) == index))
    end
  end

  test "reports the position of a receiver that is neither a pid nor nil", %{pids: pids} do
    assert Split.split([hd(pids), nil, :session], 2) == {:bad_receiver, 2}
    long = Enum.take(Stream.cycle(pids), 9_000) ++ ["x"]
    assert Split.split(long, 2) == {:bad_receiver, 9_000}
  end

  test "raises ArgumentError for an improper list or a bad worker count", %{pids: pids} do
    assert_raise ArgumentError, "expected a list, got an improper list", fn ->
      Split.split([hd(pids) | hd(pids)], 2)
    end

    for workers <- [0, 65_537] do
      assert_raise ArgumentError, "expected a worker count in 1..=65536, got: #{workers}", fn ->
        Split.split([hd(pids)], workers)
      end
    end
  end

  describe "group_by_node/1" do
    test "groups any number of nodes, keeping every pid once", %{pids: pids} do
      # 1 to 9 nodes: fewer than, as many as, and more than the four kept in one pass.
      for node_count <- 1..9 do
        groups = for n <- 1..node_count, do: FakePids.pids(:"n#{n}@127.0.0.1", n * 7)
        mixed = groups |> Enum.concat() |> Enum.concat(Enum.take(pids, 5)) |> shuffle(node_count)
        grouped = Split.group_by_node(mixed)

        assert Enum.sort(Enum.flat_map(grouped, &elem(&1, 1))) == Enum.sort(mixed)
        assert length(grouped) == node_count + 1

        for {node, members} <- grouped do
          assert Enum.all?(members, &(node(&1) == node))
        end

        assert grouped |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> length() == length(grouped)
      end
    end
  end

  defp shuffle(list, seed) do
    :rand.seed(:exsss, {seed, 2, 3})
    Enum.shuffle(list)
  end
end

defmodule GuildKit.Fanout.SplitTest do
  # The NIF split that every send runs: worker buckets by phash2, remote pids apart.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout
  alias GuildKit.Test.FakePids

  setup_all do
    pids = for _ <- 1..2_000, do: spawn(fn -> Process.sleep(:infinity) end)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)
    %{pids: pids}
  end

  # Partition counts: every count up to 64, and a spread of larger ones up to the limit.
  @counts Enum.to_list(1..64) ++
            [97, 100, 127, 128, 255, 256, 1000, 1024, 4095, 4096, 65_535, 65_536]

  test "a local pid's bucket is rem(:erlang.phash2(pid), workers) for every count", %{pids: pids} do
    for workers <- @counts do
      {buckets, counts, local_count, [], 0} = Fanout.split(pids, workers)
      assert tuple_size(buckets) == workers
      assert local_count == length(pids)

      for {bucket, index} <- buckets |> Tuple.to_list() |> Enum.with_index() do
        assert length(bucket) == elem(counts, index)
        assert Enum.all?(bucket, &(rem(:erlang.phash2(&1), workers) == index))
      end
    end
  end

  test "for power-of-two counts the bucket equals :erlang.phash2(pid, workers)", %{pids: pids} do
    for bits <- 0..16, workers = 2 ** bits do
      {buckets, _counts, _, _, _} = Fanout.split(pids, workers)

      for {bucket, index} <- buckets |> Tuple.to_list() |> Enum.with_index(),
          pid <- bucket do
        assert :erlang.phash2(pid, workers) == index
      end
    end
  end

  test "keeps duplicates, skips nils, and lists each bucket in reverse input order",
       %{pids: pids} do
    sample = Enum.take(pids, 50)
    receivers = Enum.intersperse(sample ++ Enum.take(sample, 10), nil)
    {buckets, counts, 60, [], 0} = Fanout.split(receivers, 4)

    for {bucket, index} <- buckets |> Tuple.to_list() |> Enum.with_index() do
      expected =
        (sample ++ Enum.take(sample, 10))
        |> Enum.filter(&(rem(:erlang.phash2(&1), 4) == index))
        |> Enum.reverse()

      assert bucket == expected
      assert elem(counts, index) == length(expected)
    end
  end

  test "sets other nodes' pids apart, in reverse input order", %{pids: pids} do
    ghosts = FakePids.pids(:"ghost@127.0.0.1", 5) ++ FakePids.pids(:"other@127.0.0.1", 3)
    receivers = Enum.zip(Enum.take(pids, 8), ghosts) |> Enum.flat_map(&Tuple.to_list/1)
    {_buckets, _counts, 8, remote, 8} = Fanout.split(receivers, 2)
    assert remote == Enum.reverse(ghosts)
  end

  test "splits the same below and above the normal-scheduler budget", %{pids: pids} do
    # Up to 4,096 receivers the split runs on the caller's scheduler; longer lists move
    # the call to a dirty one. Either way each bucket holds exactly its receivers.
    for size <- [0, 1, 4_095, 4_096, 4_097, 10_000] do
      receivers = pids |> Stream.cycle() |> Enum.take(size)
      {buckets, counts, ^size, [], 0} = Fanout.split(receivers, 3)

      for index <- 0..2 do
        bucket = elem(buckets, index)
        assert length(bucket) == elem(counts, index)
        assert Enum.all?(bucket, &(rem(:erlang.phash2(&1), 3) == index))
      end

      assert buckets |> Tuple.to_list() |> Enum.concat() |> Enum.sort() == Enum.sort(receivers)
    end
  end

  test "reports the position of a receiver that is neither a pid nor nil", %{pids: pids} do
    assert Fanout.split([hd(pids), nil, :session], 2) == {:guild_kit_bad_receiver, 2}
    long = Enum.take(Stream.cycle(pids), 9_000) ++ ["x"]
    assert Fanout.split(long, 2) == {:guild_kit_bad_receiver, 9_000}
  end

  test "raises ArgumentError for an improper list or a bad worker count", %{pids: pids} do
    assert_raise ArgumentError, "expected a list, got an improper list", fn ->
      Fanout.split([hd(pids) | hd(pids)], 2)
    end

    for workers <- [0, 65_537] do
      assert_raise ArgumentError, "expected a worker count in 1..=65536, got: #{workers}", fn ->
        Fanout.split([hd(pids)], workers)
      end
    end
  end

  describe "group_by_node/1" do
    test "groups any number of nodes, keeping every pid once", %{pids: pids} do
      # 1 to 9 nodes: fewer than, as many as, and more than the four kept in one pass.
      for node_count <- 1..9 do
        groups = for n <- 1..node_count, do: FakePids.pids(:"n#{n}@127.0.0.1", n * 7)
        mixed = groups |> Enum.concat() |> Enum.concat(Enum.take(pids, 5)) |> shuffle(node_count)
        grouped = Fanout.group_by_node(mixed)

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

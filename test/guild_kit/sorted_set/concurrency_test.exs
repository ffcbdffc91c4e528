defmodule GuildKit.SortedSet.ConcurrencyTest do
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet

  @writers 8
  @per_writer 3_000

  test "many processes adding, removing and reading one set" do
    set = SortedSet.from_enumerable(for i <- 1..1_000, do: {:seed, i})

    readers =
      for _ <- 1..4 do
        Task.async(fn -> read_until_done(set, 0) end)
      end

    writers =
      for w <- 1..@writers do
        Task.async(fn ->
          mine = for i <- 1..@per_writer, do: {w, i}
          Enum.each(Enum.shuffle(mine), &SortedSet.add(set, &1))
          # Each writer removes its odd members and one slice of the shared seed.
          Enum.each(mine, fn {^w, i} = m -> if rem(i, 2) == 1, do: SortedSet.remove(set, m) end)
          Enum.each(((w - 1) * 100 + 1)..(w * 100), &SortedSet.index_remove(set, {:seed, &1}))
        end)
      end

    Enum.each(writers, &Task.await(&1, 60_000))
    Enum.each(readers, &send(&1.pid, :stop))
    reads = Enum.map(readers, &Task.await(&1, 60_000))
    assert Enum.all?(reads, &(&1 > 0))

    expected =
      Enum.sort(
        for(w <- 1..@writers, i <- 1..@per_writer, rem(i, 2) == 0, do: {w, i}) ++
          for(i <- (@writers * 100 + 1)..1_000, do: {:seed, i})
      )

    assert SortedSet.to_list(set) == expected
    assert SortedSet.size(set) == length(expected)
  end

  # Every read must be consistent: live slices sorted and free of duplicates, and on a
  # snapshot taken mid-write, at/2 and find_index/2 agree.
  defp read_until_done(set, reads) do
    receive do
      :stop -> reads
    after
      0 ->
        slice = SortedSet.slice(set, :rand.uniform(1_000), 50)
        assert slice == Enum.uniq(Enum.sort(slice))

        snapshot = SortedSet.snapshot(set)
        index = :rand.uniform(SortedSet.size(snapshot)) - 1
        assert SortedSet.find_index(snapshot, SortedSet.at(snapshot, index)) == index

        read_until_done(set, reads + 1)
    end
  end
end

defmodule GuildKit.MemberList.SnapshotTest do
  # Not async: some tests compare how long calls take, which tests running alongside on
  # two cores would stretch.
  use ExUnit.Case, async: false
  import GuildKit.Test.MemberLists, only: [filled: 1]
  alias GuildKit.MemberList

  defp everything(list) do
    %{
      rows: MemberList.rows(list, 0, 1_000_000),
      size: MemberList.size(list),
      members: MemberList.member_count(list),
      groups: MemberList.groups(list),
      indexes: for(i <- 1..50, do: MemberList.index_of(list, i))
    }
  end

  test "a snapshot keeps the list as it was, whatever happens to the list later" do
    list = filled(2_000)
    MemberList.watch(list, {0, 9})
    before = everything(list)
    snapshot = MemberList.snapshot(list)

    for i <- 1..500, do: MemberList.remove(list, i)
    for i <- 3_000..3_500, do: MemberList.put(list, i, :admin, "a#{i}")
    MemberList.put(list, 2_000, :online, "moved")

    assert everything(snapshot) == before
    refute everything(list) == before
    assert MemberList.read_only?(snapshot)
    refute MemberList.read_only?(list)
    assert inspect(snapshot) =~ "read_only: true"
  end

  test "changing a snapshot raises and changes nothing" do
    list = filled(100)
    MemberList.watch(list, {0, 9})
    snapshot = MemberList.snapshot(list)
    before = everything(snapshot)

    changes = [
      fn -> MemberList.put(snapshot, 1, :online, "x") end,
      fn -> MemberList.put(snapshot, 1_000, :online, "x") end,
      fn -> MemberList.touch(snapshot, 1) end,
      fn -> MemberList.touch(snapshot, :absent) end,
      fn -> MemberList.remove(snapshot, 1) end,
      fn -> MemberList.remove(snapshot, self()) end,
      fn -> MemberList.watch(snapshot, {0, 9}) end,
      fn -> MemberList.unwatch(snapshot, {0, 9}) end
    ]

    for change <- changes do
      assert_raise ArgumentError, ~r/read-only snapshot and cannot be changed/, change
    end

    assert everything(snapshot) == before
    # The list itself is still watched once: one unwatch ends it.
    assert MemberList.put(list, 0, :admin, "a") != []
    :ok = MemberList.unwatch(list, {0, 9})
    assert MemberList.put(list, -1, :admin, "a") == []
  end

  test "a snapshot of a snapshot is the snapshot itself" do
    snapshot = MemberList.snapshot(filled(10))
    assert MemberList.snapshot(snapshot).ref == snapshot.ref
  end

  test "workers read a snapshot while the guild keeps changing the list" do
    list = filled(20_000)
    snapshot = MemberList.snapshot(list)
    expected = everything(snapshot)
    parent = self()

    readers =
      for _ <- 1..4 do
        spawn_link(fn ->
          for _ <- 1..5, do: send(parent, {:read, self(), everything(snapshot) == expected})
        end)
      end

    for i <- 1..5_000, do: MemberList.put(list, i, :admin, "changed#{i}")

    for pid <- readers, _ <- 1..5 do
      assert_receive {:read, ^pid, true}, 30_000
    end
  end

  @tag :slow
  test "a big read of the live list does not hold up writers" do
    list = filled(300_000)

    # A write that waits for the read does so on every run; one the OS preempted seldom
    # comes in each (the rule of every timing check of the suite).
    {longest_wait, read_micros} =
      GuildKit.Test.LongSchedule.retried(3, fn -> writes_during_read(list) end, fn {wait, read} ->
        wait < max(read / 4, 5_000)
      end)

    assert longest_wait < max(read_micros / 4, 5_000), inspect({longest_wait, read_micros})
  end

  # Writes while a read of the whole list runs: the longest write, and the read's time.
  defp writes_during_read(list) do
    parent = self()

    reader =
      spawn_link(fn ->
        receive do: (:go -> :ok)
        {micros, rows} = :timer.tc(fn -> MemberList.rows(list, 0, 1_000_000) end)
        send(parent, {:read, micros, length(rows)})
      end)

    send(reader, :go)

    waits =
      for i <- 1..200 do
        {micros, _} = :timer.tc(fn -> MemberList.put(list, i, :admin, "w#{i}") end)
        Process.sleep(0)
        micros
      end

    assert_receive {:read, read_micros, 300_003}, 60_000
    {Enum.max(waits), read_micros}
  end

  test "taking a snapshot costs the same at any size, and so does the first write after it" do
    small = filled(10)
    large = filled(100_000)

    time = fn fun ->
      Enum.min(for _ <- 1..20, do: elem(:timer.tc(fun), 0))
    end

    assert time.(fn -> MemberList.snapshot(large) end) < 1_000
    assert time.(fn -> MemberList.snapshot(small) end) < 1_000

    first_write =
      for i <- 1..20 do
        MemberList.snapshot(large)
        elem(:timer.tc(fn -> MemberList.put(large, i, :admin, "s#{i}") end), 0)
      end

    assert Enum.min(first_write) < 2_000
  end
end

defmodule GuildKit.MemberList.HostileTest do
  @moduledoc """
  Hostile sizes for every public function of `GuildKit.MemberList`: huge ids, sort keys
  and group ids, huge results, many windows, and terms that are equal but not
  identical. Each call must give the right answer, and the calling process must never
  be held on a normal scheduler (`long_schedule`) or in a garbage collection
  (`long_gc`) for 5 ms or more, return path included.

  The input is built first in the measured process (with a heap large enough that
  building it and receiving results never collects), reports so far are dropped, and
  only reports about that process during the measured calls count, when it really used
  that much CPU at once (`GuildKit.Test.LongSchedule`).
  """
  use ExUnit.Case, async: false
  import GuildKit.Test.MemberLists, only: [filled: 1]
  alias GuildKit.MemberList
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 600_000
  @threshold_ms 5

  # Runs `setup.()` then `fun.(input)` in a fresh process; returns `{result, reports}`
  # (`GuildKit.Test.LongSchedule.measure/3`, long_schedule and long_gc).
  defp measure(setup, fun) do
    ready = fn ->
      input = setup.()
      # Building the input left garbage: collect it now, not during the calls.
      :erlang.garbage_collect()
      input
    end

    LongSchedule.measure(ready, fun,
      threshold_ms: @threshold_ms,
      min_heap_words: 60_000_000,
      watch: [:long_schedule, :long_gc]
    )
  end

  defp assert_no_stalls({result, reports}) do
    assert reports == [], "held for #{@threshold_ms} ms or more: #{inspect(reports)}"
    result
  end

  describe "huge terms" do
    test "a 50 MB id cannot be stored: put raises, lookups find nothing, all at once" do
      setup = fn -> {filled(1_000), :binary.copy("z", 50_000_000)} end

      result =
        measure(setup, fn {list, huge} ->
          put =
            try do
              MemberList.put(list, huge, :online, "x")
            rescue
              e in ArgumentError -> e.message
            end

          {put, MemberList.index_of(list, huge), MemberList.touch(list, huge),
           MemberList.remove(list, huge), MemberList.size(list)}
        end)

      assert {"term too large" <> _, nil, [], [], 1_003} = assert_no_stalls(result)
    end

    test "put and index_of with a 10 MB id, shown in 500 windows, build its row once" do
      setup = fn ->
        list = filled(1_000)
        # 500 distinct windows showing row 1, where the new member will sort.
        for w <- 0..499, do: MemberList.watch(list, {0, 1 + w})
        {list, :binary.copy("z", 10_000_000)}
      end

      {count, shared?, index, native} =
        measure(setup, fn {list, huge} ->
          changes = MemberList.put(list, huge, :admin, "")
          ids = for {_, ops} <- changes, {:insert, 1, {:member, id}} <- ops, do: id
          # Checked here: a message to another process would copy each of them.
          shared? = Enum.all?(ids, &:erts_debug.same(&1, hd(ids)))
          {length(ids), shared?, MemberList.index_of(list, huge), GuildKit.native_memory()}
        end)
        |> assert_no_stalls()

      assert index == 1
      assert count == 500
      # One row term shared by every op, not 500 copies of the id.
      assert shared?
      assert native < 2_000_000_000
    end

    test "a deep id and a bignum id are stored and read back" do
      deep = Enum.reduce(1..50_000, [], &[&1, &2])
      big = 2 ** 8_000_000 + 1

      result =
        measure(fn -> filled(100) end, fn list ->
          MemberList.put(list, deep, :admin, "deep")
          MemberList.put(list, big, :admin, "big")

          {MemberList.index_of(list, deep), MemberList.index_of(list, big),
           MemberList.rows(list, 1, 2), MemberList.remove(list, big)}
        end)

      {deep_index, big_index, rows, _removed} = assert_no_stalls(result)
      assert {deep_index, big_index} == {2, 1}
      assert rows == [member: big, member: deep]
    end

    test "new/1 with 20 ids of 5 MB, and with 2,000 lists of 2,000 integers" do
      big_ids = for i <- 1..20, do: :binary.copy(<<i>>, 5_000_000)
      lists = for i <- 1..2_000, do: Enum.to_list(i..(i + 1_999))

      result =
        measure(fn -> {big_ids, lists} end, fn {big_ids, lists} ->
          a = MemberList.new(groups: big_ids)
          b = MemberList.new(groups: lists)
          MemberList.put(b, 1, hd(lists), "x")
          {MemberList.size(a), MemberList.groups(b) |> length()}
        end)

      assert assert_no_stalls(result) == {0, 1}
    end

    test "rows and watch of 256 rows with 200 KB ids" do
      setup = fn ->
        list = MemberList.new(groups: [:online])
        for i <- 1..256, do: MemberList.put(list, :binary.copy(<<i>>, 200_000), :online, i)
        list
      end

      result =
        measure(setup, fn list ->
          rows = MemberList.rows(list, 0, 256)
          watched = MemberList.watch(list, {1, 256})
          {length(rows), length(watched), hd(watched)}
        end)

      assert {257, 256, {:member, first}} = assert_no_stalls(result)
      assert first == :binary.copy(<<1>>, 200_000)
    end

    test "groups/1 with 40 group ids of 1 MB, and with 65,535 groups" do
      setup = fn ->
        big = for i <- 1..40, do: :binary.copy(<<i>>, 1_000_000)
        big_list = MemberList.new(groups: big)
        for {g, i} <- Enum.with_index(big), do: MemberList.put(big_list, i, g, "x")
        many = for i <- 1..65_535, do: {:role, i}
        many_list = MemberList.new(groups: many)
        for i <- 1..65_535//3, do: MemberList.put(many_list, i, {:role, i}, "x")
        {big_list, many_list}
      end

      result =
        measure(setup, fn {big_list, many_list} ->
          {length(MemberList.groups(big_list)), length(MemberList.groups(many_list))}
        end)

      assert assert_no_stalls(result) == {40, 21_845}
    end
  end

  describe "many windows" do
    test "touch/2 with 200,000 windows over the row" do
      setup = fn ->
        list = filled(1_000)
        row = MemberList.index_of(list, 500)
        for w <- 1..200_000, do: MemberList.watch(list, {max(row - w, 0), row + w})
        list
      end

      # The result is checked in the measured process: sending 200,000 changes back to
      # the test process would copy them there, a pause of the test's own making.
      result =
        measure(setup, fn list ->
          changes = MemberList.touch(list, 500)
          {length(changes), Enum.all?(changes, &match?({_, [{:update, _, {:member, 500}}]}, &1))}
        end)

      assert assert_no_stalls(result) == {200_000, true}
    end

    test "put/4 and remove/2 with exactly 2,000 windows, and 100,000" do
      for windows <- [2_000, 100_000] do
        setup = fn ->
          list = filled(5_000)

          for w <- 1..windows,
              do: MemberList.watch(list, {rem(w, 4_000), rem(w, 4_000) + div(w, 4_000)})

          list
        end

        result =
          measure(setup, fn list ->
            put = MemberList.put(list, 0, :admin, "")
            {length(put), length(MemberList.remove(list, 0))}
          end)

        {put, removed} = assert_no_stalls(result)
        assert put == windows
        assert removed == windows
      end
    end

    test "put/4 with a million windows past the end costs no more than without them" do
      setup = fn ->
        list = filled(1_000)
        bare = filled(1_000)
        for w <- 1..1_000_000, do: MemberList.watch(list, {2_000_000 + w, 2_000_100 + w})
        {list, bare}
      end

      time = fn list ->
        for i <- 1..200 do
          {micros, []} = :timer.tc(fn -> MemberList.put(list, 10_000 + i, :online, "p#{i}") end)
          micros
        end
        |> Enum.sort()
        |> Enum.at(100)
      end

      {with_windows, without} =
        measure(setup, fn {list, bare} -> {time.(list), time.(bare)} end) |> assert_no_stalls()

      assert with_windows < max(4 * without, 100), inspect({with_windows, without})
    end

    test "watch/2, unwatch/2, memory/1 and snapshot/1 with a million windows" do
      setup = fn ->
        list = filled(10_000)

        for w <- 1..1_000_000,
            do: MemberList.watch(list, {rem(w, 9_000), rem(w, 9_000) + div(w, 9_000)})

        list
      end

      result =
        measure(setup, fn list ->
          rows = MemberList.watch(list, {0, 5_000})
          :ok = MemberList.unwatch(list, {0, 5_000})
          snapshot = MemberList.snapshot(list)
          changes = MemberList.put(list, 0, :admin, "")

          {length(rows), MemberList.memory(list) > 1_000_000 * 40, length(changes),
           MemberList.size(snapshot)}
        end)

      assert {5_001, true, changes, 10_003} = assert_no_stalls(result)
      assert changes > 900_000
    end
  end

  describe "big results" do
    test "rows/3 and watch/2 of a million rows reach the caller without a pause" do
      setup = fn ->
        list = MemberList.new(groups: [:online, :offline])

        for i <- 1..1_000_000,
            do:
              MemberList.put(
                list,
                100_000_000 + i,
                if(rem(i, 3) == 0, do: :online, else: :offline),
                <<i::32>>
              )

        list
      end

      result =
        measure(setup, fn list ->
          {length(MemberList.rows(list, 0, 2_000_000)),
           length(MemberList.watch(list, {0, 999_999}))}
        end)

      assert assert_no_stalls(result) == {1_000_002, 1_000_000}
    end
  end

  describe "a stream of changes" do
    test "big reads, many windows and a stream of changes on 200,000 members" do
      groups = [:admin, :mod, :online, :offline]
      id = fn i -> 100_000_000_000_000_000 + i * 7_919 end

      setup = fn ->
        list = MemberList.new(groups: groups)

        for i <- 1..200_000,
            do:
              MemberList.put(
                list,
                id.(i),
                Enum.at(groups, rem(i * 31, 4)),
                "name#{rem(i * 7, 9_973)}"
              )

        for w <- 0..2_999, do: MemberList.watch(list, {w * 50, w * 50 + 99})
        list
      end

      result =
        measure(setup, fn list ->
          # Each big read is counted as it arrives, then dropped. Kept until the end, its
          # 1.25M words would be copied by the collections that the stream's garbage
          # causes (twice, as they are promoted to the old heap: 10-18 ms each), which is
          # the cost of this process keeping data alive, not of any call.
          big = length(MemberList.rows(list, 0, 200_010))
          watched = length(MemberList.watch(list, {0, 50_000}))

          for i <- 1..5_000 do
            MemberList.put(list, id.(i), Enum.random(groups), "renamed#{i}")
            MemberList.touch(list, id.(i))
            MemberList.index_of(list, id.(i))
          end

          {big, watched}
        end)

      assert assert_no_stalls(result) == {200_004, 50_001}
    end
  end

  describe "equal but not identical terms" do
    test "every function treats 2 and 2.0 as one member and shows the id last put" do
      list = MemberList.new(groups: [{:role, 1}, :online])
      MemberList.put(list, 2, {:role, 1.0}, 1)
      assert MemberList.watch(list, {0, 9}) == [group: {:role, 1}, member: 2]

      assert MemberList.put(list, 2.0, {:role, 1}, 1.0) == [
               {{0, 9}, [{:update, 1, {:member, 2.0}}]}
             ]

      assert [member: m] = MemberList.rows(list, 1, 1)
      assert m === 2.0
      assert MemberList.index_of(list, 2) == 1
      assert MemberList.touch(list, 2) == [{{0, 9}, [{:update, 1, {:member, 2.0}}]}]
      # Moving it with yet another form: the insert carries the new id.
      assert MemberList.put(list, 2, :online, "z") == [
               {{0, 9},
                [
                  {:delete, 1},
                  {:delete, 0},
                  {:insert, 0, {:group, :online}},
                  {:insert, 1, {:member, 2}}
                ]}
             ]

      assert MemberList.groups(list) == [{:online, 1}]
      assert MemberList.member_count(list) == 1
      assert MemberList.remove(list, 2.0) == [{{0, 9}, [{:delete, 1}, {:delete, 0}]}]
      assert MemberList.size(list) == 0
    end

    test "negative zero, and floats inside tuples and maps, replace what clients show" do
      negative_zero = GuildKit.Test.TermGenerator.negative_zero()
      list = MemberList.new(groups: [:online])

      for {stored, given} <- [
            {0.0, negative_zero},
            {{:user, 1}, {:user, 1.0}},
            {%{id: 3, tags: [1]}, %{id: 3.0, tags: [1.0]}}
          ] do
        MemberList.put(list, stored, :online, "a")
        row = MemberList.index_of(list, stored)
        MemberList.watch(list, {row, row})

        assert [{{^row, ^row}, [{:update, ^row, {:member, shown}}]}] =
                 MemberList.put(list, given, :online, "a")

        assert :erlang.term_to_binary(shown) == :erlang.term_to_binary(given)
        assert MemberList.index_of(list, stored) == row
        MemberList.unwatch(list, {row, row})
      end

      # A sort key equal but not identical moves nothing and changes no row.
      MemberList.put(list, :s, :online, {1, [2]})
      MemberList.watch(list, {0, 9})
      assert MemberList.put(list, :s, :online, {1.0, [2.0]}) == []
      assert MemberList.put(list, :s, :online, {1, [2]}) == []
    end

    test "group ids that are equal are duplicates; an equal group id selects the group" do
      assert_raise ArgumentError, ~r/duplicate group/, fn ->
        MemberList.new(groups: [{:role, 1}, {:role, 1.0}])
      end

      assert_raise ArgumentError, ~r/duplicate group/, fn ->
        MemberList.new(groups: [%{a: 1}, %{a: 1.0}])
      end

      list = MemberList.new(groups: [%{1 => :a}, %{1.0 => :a}])
      MemberList.put(list, 1, %{1.0 => :a}, "x")
      assert MemberList.groups(list) == [{%{1.0 => :a}, 1}]
    end
  end
end

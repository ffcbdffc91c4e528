defmodule GuildKit.MemberList.ApiTest do
  use ExUnit.Case, async: true
  alias GuildKit.MemberList

  defp list_with(members, groups \\ [:admin, :online, :offline]) do
    list = MemberList.new(groups: groups)
    for {id, group, name} <- members, do: MemberList.put(list, id, group, name)
    list
  end

  describe "new/1" do
    test "validates its options" do
      assert_raise ArgumentError, ~r/list of group ids, got: nil/, fn -> MemberList.new([]) end

      assert_raise ArgumentError, ~r/unknown keys \[:size\]/, fn ->
        MemberList.new(groups: [], size: 1)
      end

      assert_raise ArgumentError, ~r/list of group ids, got: :online/, fn ->
        MemberList.new(groups: :online)
      end

      assert_raise ArgumentError, ~r/keyword list/, fn -> MemberList.new(:online) end
    end

    test "rejects duplicate and unsupported group ids" do
      assert_raise ArgumentError, ~r/duplicate group: the group at position 2/, fn ->
        MemberList.new(groups: [:a, 1, 1.0])
      end

      assert_raise ArgumentError, ~r/position 1: unsupported term: a pid/, fn ->
        MemberList.new(groups: [:a, self()])
      end
    end
  end

  describe "put/4" do
    test "orders groups as given, members by sort key then id" do
      list =
        list_with([
          {3, :offline, "cy"},
          {2, :online, "bob"},
          {1, :online, "bob"},
          {9, :admin, "zed"}
        ])

      assert MemberList.rows(list, 0, 100) == [
               {:group, :admin},
               {:member, 9},
               {:group, :online},
               {:member, 1},
               {:member, 2},
               {:group, :offline},
               {:member, 3}
             ]
    end

    test "moves a present member" do
      list = list_with([{1, :online, "amy"}, {2, :online, "bob"}])
      MemberList.put(list, 1, :offline, "amy")

      assert MemberList.rows(list, 0, 9) == [
               group: :online,
               member: 2,
               group: :offline,
               member: 1
             ]

      assert MemberList.member_count(list) == 2
    end

    test "an unknown group or an unsupported term raises and changes nothing" do
      list = list_with([{1, :online, "amy"}])
      MemberList.watch(list, {0, 9})
      before = MemberList.rows(list, 0, 9)

      assert_raise ArgumentError, ~r/unknown group/, fn ->
        MemberList.put(list, 1, :banned, "amy")
      end

      assert_raise ArgumentError, ~r/unsupported term: a pid/, fn ->
        MemberList.put(list, self(), :online, "x")
      end

      assert_raise ArgumentError, ~r/unsupported term: a reference/, fn ->
        MemberList.put(list, 2, :online, make_ref())
      end

      assert_raise ArgumentError, ~r/unsupported term: a fun/, fn ->
        MemberList.put(list, 2, fn -> 1 end, "x")
      end

      assert MemberList.rows(list, 0, 9) == before
      assert MemberList.put(list, 2, :online, "bob") == [{{0, 9}, [{:insert, 2, {:member, 2}}]}]
    end

    test "a sort key too large to store raises and changes nothing" do
      list = list_with([{1, :online, "amy"}])
      huge = :binary.copy(<<0>>, 9_000_000)

      assert_raise ArgumentError, ~r/term too large/, fn ->
        MemberList.put(list, 2, :online, huge)
      end

      assert MemberList.rows(list, 0, 9) == [group: :online, member: 1]
    end

    test "re-putting a member at the same place reports nothing" do
      list = list_with([{1, :online, "amy"}, {2, :online, "bob"}])
      MemberList.watch(list, {0, 9})
      assert MemberList.put(list, 1, :online, "amy") == []
      assert MemberList.put(list, 1, :online, "abe") == []
    end

    test "an insert above a window reaches it as the row that shifted in" do
      list = list_with(for i <- 1..10, do: {i, :online, "m#{100 + i}"})
      MemberList.watch(list, {5, 6})
      # Rows: 0 header, 1..10 members m101..m110; the new member sorts first.
      assert MemberList.put(list, 0, :online, "m000") == [{{5, 6}, [{:insert, 5, {:member, 4}}]}]
    end

    test "a delete above a window is a delete at first and an insert at last" do
      list = list_with(for i <- 1..10, do: {i, :online, "m#{100 + i}"})
      MemberList.watch(list, {5, 6})
      assert MemberList.remove(list, 1) == [{{5, 6}, [{:delete, 5}, {:insert, 6, {:member, 7}}]}]
    end

    test "a change below a window produces nothing" do
      list = list_with(for i <- 1..10, do: {i, :online, "m#{100 + i}"})
      MemberList.watch(list, {0, 2})
      assert MemberList.remove(list, 9) == []
      assert MemberList.put(list, 50, :offline, "zz") == []
    end
  end

  describe "touch/2 and remove/2" do
    test "touch updates every window showing the member" do
      list = list_with([{1, :online, "amy"}, {2, :online, "bob"}])
      MemberList.watch(list, {0, 1})
      MemberList.watch(list, {1, 5})
      MemberList.watch(list, {2, 5})

      assert MemberList.touch(list, 1) == [
               {{0, 1}, [{:update, 1, {:member, 1}}]},
               {{1, 5}, [{:update, 1, {:member, 1}}]}
             ]
    end

    test "absent members give no ops" do
      list = list_with([{1, :online, "amy"}])
      MemberList.watch(list, {0, 9})
      assert MemberList.touch(list, 42) == []
      assert MemberList.remove(list, 42) == []
      assert MemberList.remove(list, self()) == []
    end

    test "removing the last member of a group removes its header" do
      list = list_with([{1, :online, "amy"}, {2, :offline, "bob"}])
      MemberList.watch(list, {0, 9})
      assert MemberList.remove(list, 1) == [{{0, 9}, [{:delete, 1}, {:delete, 0}]}]
      assert MemberList.rows(list, 0, 9) == [group: :offline, member: 2]
    end
  end

  describe "watch/2 and unwatch/2" do
    test "ranges are reference-counted" do
      list = list_with([{1, :online, "amy"}])
      MemberList.watch(list, {0, 9})
      MemberList.watch(list, {0, 9})
      assert :ok = MemberList.unwatch(list, {0, 9})
      assert [{{0, 9}, _}] = MemberList.put(list, 2, :online, "bob")
      assert :ok = MemberList.unwatch(list, {0, 9})
      assert MemberList.put(list, 3, :online, "cy") == []
      assert :ok = MemberList.unwatch(list, {0, 9})
    end

    test "a window past the end is empty until rows reach it" do
      list = list_with([{1, :online, "amy"}])
      assert MemberList.watch(list, {2, 3}) == []
      assert MemberList.put(list, 2, :online, "bob") == [{{2, 3}, [{:insert, 2, {:member, 2}}]}]
    end

    test "rejects bad ranges" do
      list = list_with([])

      for bad <- [{-1, 5}, {5, 2}, {1.0, 2}, [0, 9], 0..9, nil] do
        assert_raise ArgumentError, ~r/expected a range \{first, last\}/, fn ->
          MemberList.watch(list, bad)
        end
      end

      assert_raise ArgumentError, ~r/expected a range/, fn -> MemberList.rows(list, 3, 1) end
    end

    test "large windows are delivered in chunks and agree with small ones" do
      list =
        list_with(
          for i <- 1..5_000, do: {i, Enum.random([:admin, :online, :offline]), "n#{rem(i, 97)}"}
        )

      # More rows than one chunk holds: the first call returns the last rows and a
      # delivery for the rest.
      assert {_delivery, _position, [_ | _]} =
               GuildKit.Native.member_list_rows(list.ref, 0, 4_999)

      big = MemberList.watch(list, {0, 4_999})
      small = Enum.flat_map(0..49, &MemberList.rows(list, &1 * 100, &1 * 100 + 99))
      assert big == small
      assert big == MemberList.rows(list, 0, 4_999)
      assert length(big) == 5_000
    end

    test "changes reaching many windows are delivered in chunks, in window order" do
      list = list_with(for i <- 1..3_000, do: {i, :online, "n#{100_000 + i}"})
      windows = for w <- 0..2_999, do: {w, w + 9}
      Enum.each(windows, &MemberList.watch(list, &1))

      changes = MemberList.put(list, 0, :online, "n000")
      # Every window from the top shifted by one row.
      assert Enum.map(changes, &elem(&1, 0)) == windows

      # Rows: the header, then members 0, 1, 2...: the new member enters at row 1 and
      # each window below gets the row that shifted in at its top.
      assert hd(changes) == {{0, 9}, [{:insert, 1, {:member, 0}}]}

      for {{first, _}, ops} <- tl(changes) do
        assert ops == [{:insert, first, {:member, first - 1}}]
      end
    end
  end

  describe "queries" do
    test "index_of, groups, size and member_count" do
      list = list_with([{1, :offline, "amy"}, {2, :online, "bob"}, {3, :online, "cy"}])
      assert MemberList.index_of(list, 1) == 4
      assert MemberList.index_of(list, 3) == 2
      assert MemberList.index_of(list, 99) == nil
      assert MemberList.index_of(list, self()) == nil
      assert MemberList.groups(list) == [{:online, 2}, {:offline, 1}]
      assert MemberList.size(list) == 5
      assert MemberList.member_count(list) == 3
      assert inspect(list) == "#GuildKit.MemberList<members: 3, rows: 5>"
    end

    test "memory grows with members" do
      list = list_with([])
      empty = MemberList.memory(list)
      for i <- 1..10_000, do: MemberList.put(list, i, :online, "name#{i}")
      assert MemberList.memory(list) > empty + 10_000 * 20
    end

    test "functions reject what is not a list" do
      assert_raise ArgumentError, ~r/expected a GuildKit.MemberList, got: :x/, fn ->
        MemberList.size(:x)
      end

      assert_raise ArgumentError, ~r/expected a GuildKit.MemberList/, fn ->
        MemberList.put(nil, 1, :a, "a")
      end
    end
  end
end

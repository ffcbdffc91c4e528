defmodule GuildKit.MemberList.HandleTest do
  # Handles that are not member lists: forged, of another kind, or from another node.
  # Every public function raises an ArgumentError that says so, and inspect never
  # raises.
  use ExUnit.Case, async: false
  alias GuildKit.{MemberList, SortedSet}
  alias GuildKit.Examples.PeerNode

  defp calls(list) do
    [
      put: fn -> MemberList.put(list, 1, :online, "a") end,
      touch: fn -> MemberList.touch(list, 1) end,
      remove: fn -> MemberList.remove(list, 1) end,
      watch: fn -> MemberList.watch(list, {0, 9}) end,
      unwatch: fn -> MemberList.unwatch(list, {0, 9}) end,
      rows: fn -> MemberList.rows(list, 0, 9) end,
      index_of: fn -> MemberList.index_of(list, 1) end,
      groups: fn -> MemberList.groups(list) end,
      size: fn -> MemberList.size(list) end,
      member_count: fn -> MemberList.member_count(list) end,
      memory: fn -> MemberList.memory(list) end,
      snapshot: fn -> MemberList.snapshot(list) end
    ]
  end

  defp assert_not_a_list(list) do
    for {name, call} <- calls(list) do
      try do
        call.()
        flunk("#{name} did not raise")
      rescue
        error in ArgumentError ->
          assert error.message =~ "expected a GuildKit.MemberList", "#{name}: #{error.message}"
      end
    end

    assert inspect(list) =~ "#GuildKit.MemberList<not a valid handle"
  end

  test "a forged reference" do
    assert_not_a_list(%MemberList{ref: make_ref()})
  end

  test "a SortedSet's reference" do
    assert_not_a_list(%MemberList{ref: SortedSet.new().ref})
  end

  test "something that is not a reference at all" do
    assert_not_a_list(%MemberList{ref: :not_a_ref})
    assert_not_a_list(%MemberList{ref: {1, 2}})
  end

  test "a result delivery cannot be forged" do
    assert_raise ArgumentError, ~r/expected a GuildKit.MemberList delivery/, fn ->
      GuildKit.Native.member_list_continue(make_ref(), 0, [])
    end

    list = MemberList.new(groups: [:online])

    assert_raise ArgumentError, ~r/expected a GuildKit.MemberList delivery/, fn ->
      GuildKit.Native.member_list_continue(list.ref, 0, [])
    end
  end

  @tag :slow
  test "handles made on another node" do
    %{node: node} = peer = PeerNode.start(applications: [])

    try do
      remote = PeerNode.call(node, MemberList, :new, [[groups: [:online]]])
      assert_not_a_list(remote)

      # And a local list used on the peer raises there, as an ArgumentError (which
      # erpc hands back wrapped).
      local = MemberList.new(groups: [:online])
      MemberList.put(local, 1, :online, "a")

      for {name, _} <- calls(local) do
        args = %{put: [local, 1, :online, "a"], touch: [local, 1], remove: [local, 1]}

        args =
          Map.merge(args, %{
            watch: [local, {0, 9}],
            unwatch: [local, {0, 9}],
            rows: [local, 0, 9],
            index_of: [local, 1]
          })

        error =
          assert_raise ErlangError, fn ->
            PeerNode.call(node, MemberList, name, Map.get(args, name, [local]))
          end

        assert {:exception, %ArgumentError{message: message}, _} = error.original
        assert message =~ "expected a GuildKit.MemberList", "#{name}"
      end

      assert PeerNode.call(node, Kernel, :inspect, [local]) =~ "not a valid handle"
      assert MemberList.size(local) == 2
    after
      PeerNode.stop(peer)
    end
  end
end

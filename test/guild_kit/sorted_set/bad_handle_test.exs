defmodule GuildKit.SortedSet.BadHandleTest do
  @moduledoc """
  A handle that is not a set of this node (forged, of another kind, not a reference at
  all, or made on another node) raises an `ArgumentError` that says what is wrong, from
  every function, and `inspect/1` of it never raises.
  """
  use ExUnit.Case, async: true
  alias GuildKit.{MemberList, SortedSet}

  # Every public function that takes a set, with valid other arguments, and the
  # protocols (for values that claim to be sets: others are not enumerable at all).
  defp calls(%SortedSet{}), do: calls(nil) ++ protocol_calls()

  defp calls(_other) do
    [
      add: &SortedSet.add(&1, 1),
      index_add: &SortedSet.index_add(&1, 1),
      remove: &SortedSet.remove(&1, 1),
      index_remove: &SortedSet.index_remove(&1, 1),
      size: &SortedSet.size/1,
      member?: &SortedSet.member?(&1, 1),
      find_index: &SortedSet.find_index(&1, 1),
      at: &SortedSet.at(&1, 0),
      slice: &SortedSet.slice(&1, 0, 10),
      to_list: &SortedSet.to_list/1,
      snapshot: &SortedSet.snapshot/1,
      memory: &SortedSet.memory/1
    ]
  end

  defp protocol_calls do
    [
      "Enum.count": &Enum.count/1,
      "Enum.to_list": &Enum.to_list/1,
      "Enum.member?": &Enum.member?(&1, 1),
      "Enum.at": &Enum.at(&1, 0),
      "Enum.into": &Enum.into([1], &1)
    ]
  end

  defp assert_all_raise(set, message) do
    for {name, call} <- calls(set) do
      error = assert_raise ArgumentError, fn -> call.(set) end
      assert error.message =~ message, "#{name}: #{error.message}"
    end
  end

  test "a forged reference" do
    assert_all_raise(
      %SortedSet{ref: make_ref()},
      ~r/expected a GuildKit.SortedSet, got a handle that is not one/
    )
  end

  test "the handle of another kind: a MemberList's" do
    %MemberList{ref: ref} = MemberList.new(groups: [:online])
    set = %SortedSet{ref: ref}
    assert_all_raise(set, ~r/expected a GuildKit.SortedSet, got a handle that is not one/)
    assert inspect(set) =~ ~r/^#GuildKit.SortedSet<invalid handle: #Reference<.*>>$/
  end

  test "a struct whose handle is not a reference, and values that are not sets" do
    assert_all_raise(%SortedSet{ref: :nope}, ~r/got a struct whose handle is not one: .*:nope/)

    for value <- [nil, :set, %{ref: make_ref()}, {:set, make_ref()}] do
      assert_all_raise(value, "expected a GuildKit.SortedSet, got: #{inspect(value)}")
    end
  end

  test "inspect of a bad handle never raises and says what is wrong" do
    assert inspect(%SortedSet{ref: make_ref()}) =~
             ~r/^#GuildKit.SortedSet<invalid handle: #Reference<.*>>$/

    assert inspect(%SortedSet{ref: :nope}) == "#GuildKit.SortedSet<invalid handle: :nope>"
    # Not even the struct's own keys are needed.
    assert inspect(%{__struct__: SortedSet}) == "#GuildKit.SortedSet<invalid handle: nil>"
  end

  test "a handle that went through term_to_binary comes back as the same set" do
    set = SortedSet.from_enumerable([1, 2])
    copy = :erlang.binary_to_term(:erlang.term_to_binary(set))
    assert SortedSet.to_list(copy) == [1, 2]
    SortedSet.add(copy, 3)
    assert SortedSet.size(set) == 3
  end
end

defmodule GuildKit.SortedSet.RemoteHandleTest do
  @moduledoc "A set used on a node other than the one that made it."
  use ExUnit.Case, async: false
  import GuildKit.Test.Peers, only: [start_peer: 1]
  alias GuildKit.Examples.PeerNode
  alias GuildKit.SortedSet
  alias GuildKit.Test.FanoutFaults

  @moduletag :slow

  setup_all :start_peer

  test "a set made on a peer raises here, saying where it was made", %{node: node} do
    # The set lives in an agent on the peer; this node gets a copy of its handle.
    {:ok, agent} = PeerNode.call(node, Agent, :start, [SortedSet, :from_enumerable, [[1, 2, 3]]])

    set = PeerNode.call(node, Agent, :get, [agent, Function, :identity, []])

    for call <- [&SortedSet.size/1, &SortedSet.to_list/1, &SortedSet.add(&1, 4)] do
      error = assert_raise ArgumentError, fn -> call.(set) end
      assert error.message =~ "made on #{inspect(node)}"
      assert error.message =~ "can only be used there"
    end

    assert inspect(set) == "#GuildKit.SortedSet<made on node #{inspect(node)}, not usable here>"
    # It still works where it lives, unchanged.
    assert PeerNode.call(node, Agent, :get, [agent, SortedSet, :to_list, []]) == [1, 2, 3]
  end

  test "a set of this node raises on a peer", %{node: node} do
    set = SortedSet.from_enumerable([1])
    # erpc re-raises what the peer raised inside an {:exception, reason, stack} error.
    {:exception, error, _stack} = catch_error(PeerNode.call(node, SortedSet, :size, [set]))

    assert %ArgumentError{} = error
    assert error.message =~ "made on #{inspect(node())}"
    assert PeerNode.call(node, Kernel, :inspect, [set]) =~ "made on node #{inspect(node())}"
  end

  test "a handle that went to a peer and came back is the set again", %{node: node} do
    set = SortedSet.from_enumerable([1])
    back = PeerNode.call(node, Function, :identity, [set])
    SortedSet.add(back, 2)
    assert SortedSet.to_list(set) == [1, 2]
  end

  test "a copy of a handle on another node does not keep the set alive", %{node: node} do
    # Made by a short-lived process on the peer: once it exits, only this node's copy
    # of the handle is left, and the set is freed.
    set = PeerNode.call(node, SortedSet, :from_enumerable, [[1]])

    # That process's exit frees the set a moment after its reply came.
    size_on_peer = fn ->
      try do
        PeerNode.call(node, SortedSet, :size, [set])
      catch
        :error, {:exception, error, _stack} -> error
      end
    end

    FanoutFaults.wait_until(fn -> match?(%ArgumentError{}, size_on_peer.()) end)
    error = size_on_peer.()
    assert error.message =~ "got a handle that is not one"
  end
end

defmodule GuildKit.MemoryEstimator.RemoteTest do
  # Terms and processes of another node, made on a real :peer node.
  use ExUnit.Case, async: false

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Estimate
  alias GuildKit.Examples.PeerNode

  @moduletag :slow

  setup_all do
    # Linked to this module's setup_all process, which outlives its tests.
    %{node: node} = PeerNode.start(applications: [])
    %{node: node}
  end

  test "remote pids, references, aliases and ETS tables match flat_size", %{node: node} do
    pid = :erpc.call(node, :erlang, :self, [])
    spawned = Node.spawn(node, :timer, :sleep, [:infinity])
    ref = :erpc.call(node, :erlang, :make_ref, [])
    alias_ref = :erpc.call(node, :erlang, :alias, [])
    table = :erpc.call(node, :ets, :new, [:remote_table, [:public]])

    for {term, words} <- [{pid, 4}, {spawned, 4}, {ref, 5}, {alias_ref, 5}, {table, 5}] do
      estimate = MemoryEstimator.exact(term)
      assert %Estimate{words: ^words} = estimate
      assert estimate.words == :erts_debug.flat_size(term)
    end

    mixed = %{pid => [ref, self(), make_ref()], {table, alias_ref} => spawned}
    assert MemoryEstimator.exact(mixed).words == :erts_debug.flat_size(mixed)
  end

  test "funs capturing remote pids are rebuilt with remote pids", %{node: node} do
    pid = :erpc.call(node, :erlang, :self, [])
    fun = capture(pid, :erpc.call(node, :erlang, :make_ref, []))
    assert MemoryEstimator.exact(fun).words == :erts_debug.flat_size(fun)
  end

  # Funs of this test module do not exist on the peer: its processes start from
  # module functions.
  test "process/2 measures a process on another node, inside it", %{node: node} do
    members = Map.new(1..5000, &{&1, :online})
    {:ok, agent} = :erpc.call(node, Agent, :start, [Map, :put, [%{}, :members, members]])
    state_words = :erts_debug.flat_size(%{members: members})

    assert {:ok, [{[], total}, {[:members], estimate}]} = MemoryEstimator.process(agent)
    assert estimate.words < total.words
    assert abs(total.words - state_words) / state_words < 0.02
    assert :erpc.call(node, :sys, :get_state, [agent]) == %{members: members}
  end

  test "a remote process on a node that went down" do
    %{node: node} = peer = PeerNode.start(applications: [])
    {:ok, agent} = :erpc.call(node, Agent, :start, [Map, :new, []])
    PeerNode.stop(peer)
    assert {:error, reason} = MemoryEstimator.process(agent, timeout: 1000)
    assert reason in [{:nodedown, node}, :noproc]
  end

  defp capture(a, b), do: fn -> {a, b} end
end

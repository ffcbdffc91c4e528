defmodule GuildKit.SortedSet.ProtocolsTest do
  use ExUnit.Case, async: false
  alias GuildKit.SortedSet

  describe "Enumerable" do
    test "works with Enum and Stream" do
      set = SortedSet.from_enumerable(1..1_000)
      assert Enum.to_list(set) == Enum.to_list(1..1_000)
      assert Enum.map(set, &(&1 * 2)) |> Enum.take(3) == [2, 4, 6]
      assert Enum.reduce(set, 0, &+/2) == 500_500

      assert Stream.filter(set, &(rem(&1, 100) == 0)) |> Enum.to_list() ==
               Enum.to_list(100..1_000//100)

      assert Enum.zip(set, [:a, :b]) == [{1, :a}, {2, :b}]
    end

    test "count and member? use size and member?" do
      set = SortedSet.from_enumerable([1, 2, 3])
      assert Enum.count(set) == 3
      assert Enum.member?(set, 2.0)
      refute Enum.member?(set, 4)
      assert Enumerable.count(set) == {:ok, 3}
      assert Enumerable.member?(set, 1) == {:ok, true}
    end

    test "slicing reads by index" do
      set = SortedSet.from_enumerable(1..1_000)
      assert Enum.at(set, 499) == 500
      assert Enum.at(set, -1) == 1_000
      assert Enum.slice(set, 10, 3) == [11, 12, 13]
      assert Enum.slice(set, 0..20//10) == [1, 11, 21]
      assert Enum.take(set, -2) == [999, 1_000]
    end

    test "a traversal sees the set as it was when it started" do
      set = SortedSet.from_enumerable(1..100)

      seen =
        Enum.map(set, fn i ->
          SortedSet.remove(set, i + 1)
          i
        end)

      assert seen == Enum.to_list(1..100)
    end

    test "Enum.take reads only as many members as it needs" do
      set = SortedSet.from_enumerable(1..1_000_000)

      assert traced_slice_calls(fn -> assert Enum.take(set, 10) == Enum.to_list(1..10) end) ==
               [{0, 16}]
    end
  end

  # The {start, amount} of every SortedSet.slice/3 call made by `fun`. A process cannot
  # be its own tracer, so a helper process collects the trace messages.
  defp traced_slice_calls(fun) do
    tracer =
      spawn_link(fn ->
        collect = fn collect, calls ->
          receive do
            {:trace, _, :call, {SortedSet, :slice, [_, start, amount]}} ->
              collect.(collect, [{start, amount} | calls])

            {:report, to} ->
              send(to, {:calls, Enum.reverse(calls)})
          end
        end

        collect.(collect, [])
      end)

    :erlang.trace_pattern({SortedSet, :slice, 3}, true, [])
    :erlang.trace(self(), true, [:call, {:tracer, tracer}])

    try do
      fun.()
    after
      :erlang.trace(self(), false, [:call])
      :erlang.trace_pattern({SortedSet, :slice, 3}, false, [])
    end

    # Trace messages and plain ones are not ordered: wait until the traces are in.
    delivered = :erlang.trace_delivered(self())
    assert_receive {:trace_delivered, _, ^delivered}, 5_000
    send(tracer, {:report, self()})
    assert_receive {:calls, calls}, 5_000
    calls
  end

  test "Collectable adds every term" do
    set = Enum.into([3, 1, 2, 1.0], SortedSet.new())
    assert SortedSet.to_list(set) == [1, 2, 3]
    assert for(x <- 1..3, into: set, do: x * 10) |> SortedSet.to_list() == [1, 2, 3, 10, 20, 30]
  end

  test "Inspect shows the size" do
    assert inspect(SortedSet.from_enumerable([1, 2, 3])) == "#GuildKit.SortedSet<size: 3>"
    assert inspect(SortedSet.new()) == "#GuildKit.SortedSet<size: 0>"
  end
end

defmodule GuildKit.MemoryEstimator.BreakdownTest do
  use ExUnit.Case, async: true

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Estimate
  alias GuildKit.Test.EstimatorTerms

  defmodule Config do
    defstruct limits: %{max_members: 1000, max_channels: 50}, region: "eu", flags: []
  end

  defmodule State do
    defstruct [:members, :config, :icon, :name]
  end

  defp state do
    %State{
      members: Map.new(1..200, &{&1, %{nick: "n#{&1}", roles: [1, 2]}}),
      config: %Config{flags: [:a, :b, :c]},
      icon: :binary.copy("i", 5000),
      name: "guild"
    }
  end

  defp paths(breakdown), do: Enum.map(breakdown, &elem(&1, 0))

  test "the whole term comes first, then fields largest first" do
    breakdown = MemoryEstimator.breakdown(state())
    assert [{[], root} | fields] = breakdown
    assert root.words == :erts_debug.flat_size(state())

    sizes = Enum.map(fields, fn {_, e} -> e.bytes + e.off_heap_binary_bytes end)
    assert sizes == Enum.sort(sizes, :desc)
    assert hd(paths(fields)) == [:members]
  end

  test "fields of structs and small maps are listed down to :depth, without :__struct__" do
    assert paths(MemoryEstimator.breakdown(state(), depth: 0)) == [[]]

    depth1 = paths(MemoryEstimator.breakdown(state(), depth: 1))
    assert Enum.sort(depth1) == Enum.sort([[], [:members], [:config], [:icon], [:name]])

    depth2 = paths(MemoryEstimator.breakdown(state(), depth: 2))
    assert [:config, :limits] in depth2
    assert [:config, :region] in depth2
    refute Enum.any?(depth2, &(List.last(&1) == :__struct__))
    # A map of 200 members is a collection, not a record: sized whole.
    refute Enum.any?(depth2, &match?([:members, _], &1))

    depth3 = paths(MemoryEstimator.breakdown(state(), depth: 3))
    assert [:config, :limits, :max_members] in depth3
  end

  test "parts add up: a map is its own words, its keys and its fields" do
    term = %{a: [1, 2, 3], b: {1.5, "bin"}, c: %{d: 2.0}}
    breakdown = Map.new(MemoryEstimator.breakdown(term, depth: 2))

    assert breakdown[[]].words == :erts_debug.flat_size(term)
    assert breakdown[[:a]].words == :erts_debug.flat_size([1, 2, 3])
    assert breakdown[[:c]].words == :erts_debug.flat_size(%{d: 2.0})
    own = 2 * 3 + 4

    assert breakdown[[]].words ==
             own + breakdown[[:a]].words + breakdown[[:b]].words + breakdown[[:c]].words

    assert breakdown[[]].exact?
    assert breakdown[[]].sampled == breakdown[[]].total
  end

  test "non-atom keys appear in paths and their size is counted" do
    term = %{"members" => Enum.to_list(1..10), {:shard, 1} => 1.0}
    breakdown = Map.new(MemoryEstimator.breakdown(term))
    assert breakdown[[]].words == :erts_debug.flat_size(term)
    assert Map.has_key?(breakdown, ["members"])
    assert Map.has_key?(breakdown, [{:shard, 1}])
  end

  test ":min_bytes leaves out small fields but never the whole term" do
    breakdown = MemoryEstimator.breakdown(state(), min_bytes: 1000)
    assert paths(breakdown) == [[], [:members], [:icon]]

    for {path, %Estimate{} = e} <- breakdown, path != [] do
      assert e.bytes + e.off_heap_binary_bytes >= 1000
    end

    assert [{[], _}] = MemoryEstimator.breakdown(%{a: 1}, min_bytes: 10_000)
  end

  test "terms that are not small maps are sized whole" do
    for term <- [[1, 2], {1, %{a: 1}}, "binary", Map.new(1..100, &{&1, &1}), %{}] do
      assert [{[], estimate}] = MemoryEstimator.breakdown(term)
      assert estimate.words == :erts_debug.flat_size(term)
    end
  end

  test "sampled fields of same-sized elements add up to the exact size" do
    term = %{a: Enum.map(1..10_000, &{&1}), b: Enum.map(1..10_000, &{&1})}
    breakdown = Map.new(MemoryEstimator.breakdown(term))
    refute breakdown[[]].exact?
    assert breakdown[[:a]].words == 40_000
    assert breakdown[[]].words == :erts_debug.flat_size(term)
  end

  test "large fields are sampled with their own seed" do
    {list, _rand} = EstimatorTerms.mixed(:list, 10_000, EstimatorTerms.seed(1))
    breakdown = Map.new(MemoryEstimator.breakdown(%{a: list, b: list}))
    refute breakdown[[:a]].exact?
    # The same list, sampled at other positions, gives another estimate.
    assert breakdown[[:a]].words != breakdown[[:b]].words
  end

  test "bad options raise ArgumentError naming the value" do
    assert_raise ArgumentError, ~r/:depth to be a non-negative integer, got: -1/, fn ->
      MemoryEstimator.breakdown(%{}, depth: -1)
    end

    assert_raise ArgumentError, ~r/:min_bytes to be a non-negative integer, got: "1k"/, fn ->
      MemoryEstimator.breakdown(%{}, min_bytes: "1k")
    end

    assert_raise ArgumentError, ~r/unknown keys \[:timeout\]/, fn ->
      MemoryEstimator.breakdown(%{}, timeout: 10)
    end
  end
end

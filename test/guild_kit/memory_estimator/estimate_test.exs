defmodule GuildKit.MemoryEstimator.EstimateTest do
  use ExUnit.Case, async: true

  # Tests of 10 s or more here take nearly twice as long on a slow CI machine: room
  # beyond ExUnit's default 60 s.
  @moduletag timeout: 300_000

  import Bitwise

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Estimate
  alias GuildKit.Test.EstimatorTerms, as: Gen

  # Relative error of an estimate against flat_size, in percent; and the 95th
  # percentile of a list of them.
  defp error(term, opts) do
    flat = :erts_debug.flat_size(term)
    (MemoryEstimator.estimate(term, opts).words - flat) / flat * 100
  end

  defp p95(errors) do
    sorted = errors |> Enum.map(&abs/1) |> Enum.sort()
    Enum.at(sorted, ceil(length(sorted) * 0.95) - 1)
  end

  # Errors over generated terms, one term and one sample seed per data seed.
  defp errors(generate, seeds, opts \\ []) do
    for seed <- seeds do
      {term, _} = generate.(Gen.seed(seed))
      error(term, Keyword.put(opts, :seed, seed))
    end
  end

  describe "below the sampling threshold" do
    test "the answer is exact" do
      terms = [
        Enum.to_list(1..200),
        Map.new(1..200, &{&1, {&1, "v"}}),
        List.to_tuple(Enum.map(1..200, &[&1 * 1.0])),
        %{list: Enum.to_list(1..200), map: Map.new(1..100, &{&1, &1})}
      ]

      for term <- terms do
        estimate = MemoryEstimator.estimate(term)
        assert estimate == MemoryEstimator.exact(term)
        assert estimate.exact?
        assert estimate.words == :erts_debug.flat_size(term)
      end
    end

    test "one element more is sampled" do
      for term <- [
            Enum.to_list(1..301),
            List.to_tuple(Enum.to_list(1..301)),
            Map.new(1..301, &{&1, &1})
          ] do
        estimate = MemoryEstimator.estimate(term, samples: 300)
        refute estimate.exact?
        assert estimate.sampled < estimate.total
      end
    end
  end

  describe "sampling" do
    test "collection words are exact even when their elements are sampled" do
      list = Enum.to_list(1..100_000)

      assert %Estimate{words: 200_000, exact?: false, total: 100_001} =
               MemoryEstimator.estimate(list)

      tuple = List.to_tuple(list)
      assert %Estimate{words: 100_001, exact?: false} = MemoryEstimator.estimate(tuple)
    end

    test "the same seed gives the same estimate; another seed, another sample" do
      {list, _} = Gen.mixed(:list, 50_000, Gen.seed(1))
      a = MemoryEstimator.estimate(list, seed: 7)
      assert MemoryEstimator.estimate(list, seed: 7) == a
      others = for seed <- 1..5, do: MemoryEstimator.estimate(list, seed: seed).words
      assert length(Enum.uniq(others)) > 1
    end

    test "lists take between half of :samples and :samples picks" do
      for n <- [1000, 4096, 4097, 100_000], samples <- [64, 256] do
        picks =
          MemoryEstimator.estimate(Enum.map(1..n, &(&1 * 1.0)), samples: samples).sampled - 1

        assert picks in div(samples, 2)..(samples + 1),
               "#{n} elements, #{samples} samples: #{picks}"
      end
    end

    test "collections inside sampled elements take at most 32 picks" do
      nested = for _ <- 1..1000, do: Enum.map(1..1000, &(&1 * 1.0))
      estimate = MemoryEstimator.estimate(nested, samples: 100)
      assert estimate.sampled <= 1 + 101 * (1 + 33)
      assert estimate.words == :erts_debug.flat_size(nested)
    end

    test "off-heap binary bytes are estimated too" do
      {list, _} = Gen.mixed(:list, 50_000, Gen.seed(3))
      exact = MemoryEstimator.exact(list).off_heap_binary_bytes
      estimate = MemoryEstimator.estimate(list, samples: 1024).off_heap_binary_bytes
      assert abs(estimate - exact) / exact < 0.15
    end

    test "a sampled hashmap's trie takes its expected size, close to the real one" do
      # Immediate keys and values take no words: all that is counted is the trie.
      for {keys, max_error} <- [{100, 0.03}, {1_000, 0.015}, {100_000, 0.002}],
          seed <- 1..5 do
        rand = Gen.seed(seed)
        {pairs, _} = Enum.map_reduce(1..keys, rand, fn i, r -> next_key(i, r) end)
        map = Map.new(pairs)
        exact = :erts_debug.flat_size(map)
        estimate = MemoryEstimator.estimate(map, samples: 16).words
        assert abs(estimate - exact) / exact < max_error, "#{keys} keys, seed #{seed}"
      end
    end
  end

  # A random small-integer key, distinct from all others by its low bits.
  defp next_key(i, rand) do
    {high, rand} = :rand.uniform_s(1 <<< 30, rand)
    {{high * 1_000_000 + i, 0}, rand}
  end

  describe "accuracy against flat_size at default options" do
    test "homogeneous maps, lists and tuples: within 2% at the 95th percentile" do
      members = errors(&Gen.members(20_000, &1), 1..20)
      small_maps = errors(&Gen.small_maps(50_000, &1), 1..20)

      tuples =
        errors(
          fn rand ->
            {maps, rand} = Gen.small_maps(50_000, rand)
            {List.to_tuple(maps), rand}
          end,
          1..20
        )

      IO.puts(
        "homogeneous p95: members #{p95(members)}%, list #{p95(small_maps)}%, tuple #{p95(tuples)}%"
      )

      assert p95(members) <= 2.0
      assert p95(small_maps) <= 2.0
      assert p95(tuples) <= 2.0
    end

    test "mixed shapes: within 15% at the 95th percentile" do
      for kind <- [:list, :tuple, :map] do
        errs = errors(&Gen.mixed(kind, 50_000, &1), 1..20)
        IO.puts("mixed #{kind}: p95 #{p95(errs)}%")
        assert p95(errs) <= 15.0
      end
    end

    test "unbiased: over many sample seeds, the mean error vanishes" do
      # The spread of one estimate is about 6% here; over 400 seeds the mean's
      # standard error is about 0.3%.
      for kind <- [:list, :tuple] do
        {term, _} = Gen.mixed(kind, 5000, Gen.seed(99))
        errs = for seed <- 1..400, do: error(term, seed: seed)
        mean = Enum.sum(errs) / length(errs)
        assert abs(mean) <= 1.0, "#{kind}: mean error #{mean}%"
      end
    end

    @tag :slow
    test "a realistic guild state: within 5% at the 95th percentile" do
      errs = errors(&Gen.guild_state(100_000, &1), 1..10)
      IO.puts("guild state p95: #{p95(errs)}%")
      assert p95(errs) <= 5.0
    end

    @tag :slow
    test "a million entries: maps, lists and tuples" do
      {members, _} = Gen.members(1_000_000, Gen.seed(1))
      {small_maps, _} = Gen.small_maps(1_000_000, Gen.seed(2))
      {mixed, _} = Gen.mixed(:tuple, 1_000_000, Gen.seed(3))

      for {name, term, bound} <- [
            {:members, members, 2},
            {:small_maps, small_maps, 2},
            {:mixed, mixed, 15}
          ],
          seed <- 1..3 do
        err = error(term, seed: seed)
        assert abs(err) <= bound, "#{name} seed #{seed}: #{err}%"
      end
    end
  end

  describe "options" do
    test "bad options raise ArgumentError naming the value" do
      assert_raise ArgumentError, ~r/:samples to be a positive integer, got: 0/, fn ->
        MemoryEstimator.estimate([], samples: 0)
      end

      assert_raise ArgumentError, ~r/:samples to be a positive integer, got: :all/, fn ->
        MemoryEstimator.estimate([], samples: :all)
      end

      assert_raise ArgumentError, ~r/:seed to be an integer, got: 1.5/, fn ->
        MemoryEstimator.estimate([], seed: 1.5)
      end

      assert_raise ArgumentError, ~r/unknown keys \[:depth\]/, fn ->
        MemoryEstimator.estimate([], depth: 1)
      end

      assert_raise ArgumentError, ~r/expected options to be a keyword list, got: :fast/, fn ->
        MemoryEstimator.estimate([], :fast)
      end
    end

    test "huge sample counts and seeds of any size are accepted" do
      assert MemoryEstimator.estimate(Enum.to_list(1..10), samples: 2 ** 70).exact?
      assert MemoryEstimator.estimate(Enum.to_list(1..1000), seed: -(2 ** 100)).words == 2000
    end
  end
end

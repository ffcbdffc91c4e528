defmodule GuildKit.MemoryEstimator.SchedulerTest do
  # No call may hold a normal scheduler for long: full walks run on dirty schedulers,
  # and normal-scheduler attempts stop within their budget (about 0.4 ms).
  use ExUnit.Case, async: false

  alias GuildKit.MemoryEstimator
  alias GuildKit.Test.EstimatorTerms, as: Gen
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  # Tests of 10 s or more here take nearly twice as long on a slow CI machine: room
  # beyond ExUnit's default 60 s.
  @moduletag timeout: 300_000

  # Inputs of tens of millions of words need a heap that never collects while measured.
  @heap_words 100_000_000

  defp assert_no_long_schedule(setup, fun),
    do: LongSchedule.assert_no_long_schedule(collected(setup), fun, min_heap_words: @heap_words)

  # Building these inputs leaves much garbage; collected at the end of the setup, it
  # cannot fill the heap (and show up as a collection of tens of milliseconds) during
  # the measured calls.
  defp collected(setup) do
    fn ->
      input = setup.()
      :erlang.garbage_collect()
      input
    end
  end

  # Every public entry point on `term`, with the default and a huge sample count
  # (which walks everything but still starts on a normal scheduler), and a breakdown
  # as deep as it goes. Returns a small value, as LongSchedule wants.
  defp size_every_way(term) do
    [
      MemoryEstimator.estimate(term).words,
      MemoryEstimator.estimate(term, samples: 100_000).words,
      MemoryEstimator.exact(term).words,
      length(MemoryEstimator.breakdown(term)),
      length(MemoryEstimator.breakdown(term, depth: 1_000_000, samples: 100_000))
    ]
  end

  test "a million-entry map of member structs" do
    [_, _, exact, _, _] =
      assert_no_long_schedule(
        fn -> elem(Gen.members(1_000_000, Gen.seed(1)), 0) end,
        &size_every_way/1
      )

    assert exact > 20_000_000
  end

  test "a million-element list, a million-element tuple, a million levels of nesting" do
    assert_no_long_schedule(
      fn -> Enum.map(1..1_000_000, &%{id: &1, n: &1 * 2}) end,
      &size_every_way/1
    )

    assert_no_long_schedule(
      fn -> List.to_tuple(Enum.map(1..1_000_000, &{&1, &1 * 1.0})) end,
      &size_every_way/1
    )

    assert_no_long_schedule(
      fn -> Enum.reduce(1..1_000_000, [], fn _, acc -> [acc] end) end,
      &size_every_way/1
    )
  end

  test "terms only a dirty scheduler reads: funs, references, bitstrings, bignums, binaries at a bit offset" do
    setup = fn ->
      {guild, _} = Gen.guild_state(100_000, Gen.seed(2))

      %{
        funs: [fn -> guild end | Enum.map(1..1000, fn i -> fn -> {i, "captured"} end end)],
        refs: Enum.map(1..100_000, fn _ -> make_ref() end),
        bits: Enum.map(1..10_000, &<<&1::size(rem(&1, 500) + 1)>>),
        bignums: Enum.map(1..10_000, &(2 ** (64 * rem(&1, 700)) + &1)),
        # Reading a binary at a bit offset copies it.
        shifted: Enum.map(1..400, &Gen.shifted(:binary.copy(<<&1>>, 100_000)))
      }
    end

    assert_no_long_schedule(setup, fn inputs ->
      Enum.map(Map.values(inputs), &size_every_way/1)
    end)
  end

  test "the hostile corpus, each kind alone and all together" do
    # Built here and shared with the measuring process: were it the only owner of the
    # binaries, freeing them as it exits would show up as a long schedule of its own.
    corpus = Gen.hostile()
    {:ok, server} = Agent.start_link(fn -> corpus end)

    for term <- [corpus | Map.values(corpus)] do
      assert_no_long_schedule(fn -> term end, &size_every_way/1)
    end

    assert {:ok, [{[], _} | _]} =
             assert_no_long_schedule(fn -> server end, fn server ->
               MemoryEstimator.process(server, depth: 1_000_000, timeout: 60_000)
             end)
  end

  test "process/2: the measurement inside the target, and the caller's side" do
    # process/2 runs breakdown/2 on the state inside the target process: measured here
    # in a process holding a guild state of a million members.
    setup = fn -> elem(Gen.guild_state(1_000_000, Gen.seed(3)), 0) end
    assert assert_no_long_schedule(setup, &length(MemoryEstimator.breakdown(&1))) > 1

    # The caller only waits for a small reply.
    setup = fn ->
      {:ok, server} = Agent.start(fn -> elem(Gen.guild_state(300_000, Gen.seed(4)), 0) end)
      server
    end

    assert {:ok, [{[], _} | _]} =
             assert_no_long_schedule(setup, &MemoryEstimator.process(&1, timeout: 60_000))
  end

  test "the monitor catches a walk of the same inputs on a normal scheduler (control)" do
    # :erlang.external_size/1 walks a whole term without yielding. The sum uses the
    # results, so that the compiler keeps the calls.
    setup = fn -> elem(Gen.members(1_000_000, Gen.seed(1)), 0) end
    fun = fn members -> Enum.sum(for _ <- 1..3, do: :erlang.external_size(members)) end

    {_, reports} =
      LongSchedule.measure(collected(setup), fun, threshold_ms: 5, min_heap_words: @heap_words)

    assert reports != []
  end
end

# GuildKit.MemoryEstimator against :erts_debug.flat_size/1 and :sys.get_state/1, in the
# same run, for every target of the issue.
#
#     MIX_ENV=prod mix run bench/memory_estimator.exs
#
# Terms are built in a process with a big heap and then collected once, as a
# long-lived GenServer's state would be (a compacted heap is also flat_size's best
# case). Latencies are per call from Elixir, median and p99.

Code.require_file("support/harness.exs", __DIR__)
Code.require_file("../test/support/estimator_terms.ex", __DIR__)
Code.require_file("../test/support/long_schedule.ex", __DIR__)

defmodule GuildKit.Bench.MemoryEstimator do
  alias GuildKit.Bench.Harness
  alias GuildKit.MemoryEstimator
  alias GuildKit.Test.EstimatorTerms, as: Gen

  def run do
    IO.puts("# GuildKit.MemoryEstimator · #{Harness.machine()} · load #{Harness.load()}\n")
    # The first use checks the size model once per VM: not part of any figure.
    MemoryEstimator.exact(1)
    first_call()
    speed()
    accuracy()
    process()
    normal_scheduler()
    stalls()
    IO.puts("load at the end: #{Harness.load()}")
  end

  # Target: a 1M-element list, first call, at least 5x faster than flat_size. Each
  # round builds the list in a fresh process and collects it; half the rounds call
  # flat_size first. "later" is the median of 9 further calls; "later, cold" evicts
  # the caches (a 128 MB read) before each, to tell cache warmth from work.
  defp first_call do
    cases = [
      {"1M-element list of small maps",
       fn r -> elem(Gen.small_maps(1_000_000, Gen.seed(r)), 0) end},
      {"1M-element list of integers", fn _ -> Enum.to_list(1..1_000_000) end}
    ]

    rows =
      for {name, build} <- cases do
        rounds =
          for round <- 1..11,
              do: Harness.in_big_process(fn -> first_call_round(build, round) end, 150_000_000)

        [est_first, est_later, est_cold, flat_first, flat_later] =
          for i <- 0..4, do: median(Enum.map(rounds, &elem(&1, i)))

        [
          name,
          Harness.format_ns(est_first),
          Harness.format_ns(est_later),
          Harness.format_ns(est_cold),
          Harness.format_ns(flat_first),
          Harness.format_ns(flat_later),
          "#{Float.round(flat_first / est_first, 1)}x",
          "#{Float.round(flat_later / est_later, 1)}x",
          "first call >= 5x"
        ]
      end

    IO.puts("## First call and later calls against flat_size, same run (median of 11 rounds)\n")

    Harness.table(
      [
        "term",
        "estimate/2 first",
        "later",
        "later, cold",
        "flat_size first",
        "later",
        "speed-up first",
        "later",
        "target"
      ],
      rows
    )

    IO.puts("")
  end

  defp first_call_round(build, round) do
    term = build.(round)
    :erlang.garbage_collect()
    time = fn fun -> elem(:timer.tc(fun), 0) * 1000 end
    estimate = fn -> MemoryEstimator.estimate(term) end
    flat = fn -> :erts_debug.flat_size(term) end

    {est_first, flat_first} =
      if rem(round, 2) == 0 do
        e = time.(estimate)
        {e, time.(flat)}
      else
        f = time.(flat)
        {time.(estimate), f}
      end

    est_later = median(for _ <- 1..9, do: time.(estimate))
    evict = :binary.copy(<<round>>, 128_000_000)

    est_cold =
      median(
        for _ <- 1..9,
            do:
              (
                :erlang.crc32(evict)
                time.(estimate)
              )
      )

    flat_later = median(for _ <- 1..5, do: time.(flat))
    {est_first, est_later, est_cold, flat_first, flat_later}
  end

  defp median(samples), do: Enum.at(Enum.sort(samples), div(length(samples), 2))

  # Targets: a 1M-entry map at most 0.1 ms and 1,000x faster than flat_size; a
  # 1M-element list of small maps at most 5 ms and 5x faster.
  defp speed do
    rows =
      Harness.in_big_process(
        fn ->
          cases = [
            {"1M-entry map of member structs",
             fn -> elem(Gen.members(1_000_000, Gen.seed(1)), 0) end, "<= 0.1 ms, >= 1000x"},
            {"1M-element list of small maps",
             fn -> elem(Gen.small_maps(1_000_000, Gen.seed(2)), 0) end, "<= 5 ms, >= 5x"},
            {"guild state, 250k members",
             fn -> elem(Gen.guild_state(250_000, Gen.seed(3)), 0) end, "-"}
          ]

          for {name, build, target} <- cases do
            term = build.()
            :erlang.garbage_collect()
            speed_row(name, term, target)
          end
        end,
        150_000_000
      )

    IO.puts("## Speed against flat_size\n")

    Harness.table(
      [
        "term",
        "words",
        "estimate/2 median",
        "p99",
        "flat_size median",
        "p99",
        "speed-up",
        "exact/1 median",
        "target"
      ],
      rows
    )

    IO.puts("")
  end

  defp speed_row(name, term, target) do
    words = :erts_debug.flat_size(term)
    estimate = Harness.repeat(500, fn -> MemoryEstimator.estimate(term) end)
    flat = Harness.repeat(15, fn -> :erts_debug.flat_size(term) end)
    exact = Harness.repeat(5, fn -> MemoryEstimator.exact(term) end)

    [
      name,
      words,
      Harness.format_ns(estimate.median),
      Harness.format_ns(estimate.p99),
      Harness.format_ns(flat.median),
      Harness.format_ns(flat.p99),
      "#{round(flat.median / estimate.median)}x",
      Harness.format_ns(exact.median),
      target
    ]
  end

  # Targets: error at default options at most 2% at the 95th percentile over seeds on
  # homogeneous data, at most 5% on the realistic guild state.
  defp accuracy do
    cases = [
      {"members map, 100k (homogeneous)", &Gen.members(100_000, &1), 20, "<= 2%"},
      {"small maps list, 100k (homogeneous)", &Gen.small_maps(100_000, &1), 20, "<= 2%"},
      {"small maps tuple, 100k (homogeneous)", &tuple_of_small_maps/1, 20, "<= 2%"},
      {"members map, 1M (homogeneous)", &Gen.members(1_000_000, &1), 5, "<= 2%"},
      {"mixed list, 100k", &Gen.mixed(:list, 100_000, &1), 20, "-"},
      {"mixed map, 100k", &Gen.mixed(:map, 100_000, &1), 20, "-"},
      {"guild state, 100k members", &Gen.guild_state(100_000, &1), 10, "<= 5%"}
    ]

    rows =
      for {name, generate, seeds, target} <- cases do
        Harness.in_big_process(fn -> accuracy_row(name, generate, seeds, target) end, 80_000_000)
      end

    IO.puts("## Error against flat_size at default options\n")

    Harness.table(
      ["data", "seeds", "p50 |error|", "p95 |error|", "mean error", "max |error|", "target"],
      rows
    )

    IO.puts("")
  end

  defp tuple_of_small_maps(rand) do
    {maps, rand} = Gen.small_maps(100_000, rand)
    {List.to_tuple(maps), rand}
  end

  # One term and one sample seed per data seed.
  defp accuracy_row(name, generate, seeds, target) do
    errors =
      for seed <- 1..seeds do
        {term, _} = generate.(Gen.seed(seed))
        flat = :erts_debug.flat_size(term)
        (MemoryEstimator.estimate(term, seed: seed).words - flat) / flat * 100
      end

    sorted = errors |> Enum.map(&abs/1) |> Enum.sort()
    pct = fn x -> "#{Float.round(x, 2)}%" end

    [
      name,
      seeds,
      pct.(Enum.at(sorted, div(seeds, 2))),
      pct.(Enum.at(sorted, ceil(seeds * 0.95) - 1)),
      pct.(Enum.sum(errors) / seeds),
      pct.(List.last(sorted)),
      target
    ]
  end

  # Target: process/2 on a GenServer whose state is 10M words at most 2 ms, against
  # :sys.get_state/1 plus flat_size.
  defp process do
    {:ok, server} =
      GenServer.start(__MODULE__.Server, fn -> elem(Gen.guild_state(260_000, Gen.seed(4)), 0) end,
        spawn_opt: [min_heap_size: 60_000_000]
      )

    words = GenServer.call(server, :words, 60_000)
    {:ok, _} = MemoryEstimator.process(server)

    inside = Harness.repeat(200, fn -> {:ok, _} = MemoryEstimator.process(server) end)

    copy =
      Harness.in_big_process(
        fn ->
          Harness.repeat(5, fn -> :erts_debug.flat_size(:sys.get_state(server, 60_000)) end)
        end,
        60_000_000
      )

    GenServer.stop(server)
    IO.puts("## process/2 on a GenServer whose state is #{words} words\n")

    Harness.table(
      ["call", "median", "p99", "target"],
      [
        [
          "process/2 (breakdown inside the process)",
          Harness.format_ns(inside.median),
          Harness.format_ns(inside.p99),
          "<= 2 ms"
        ],
        [
          ":sys.get_state/1 + flat_size",
          Harness.format_ns(copy.median),
          Harness.format_ns(copy.p99),
          "-"
        ],
        ["speed-up", "#{round(copy.median / inside.median)}x", "", ""]
      ]
    )

    IO.puts("")
  end

  # The longest a normal-scheduler attempt runs before it finishes or hands over to a
  # dirty scheduler, on inputs built to exhaust its budget.
  defp normal_scheduler do
    rows =
      Harness.in_big_process(fn ->
        cases = [
          {"10k-element list of small maps, all sampled",
           Enum.map(1..10_000, &%{a: &1, b: "x", c: [1]}), 100_000},
          {"5,000-key map, string keys, walked whole",
           Map.new(1..5000, &{"key-#{&1}-" <> String.duplicate("k", 50), &1}), 100_000},
          {"20k-element tuple of references",
           List.to_tuple(Enum.map(1..20_000, fn _ -> make_ref() end)), 100_000},
          {"1M-element list (spine)", Enum.to_list(1..1_000_000), 256},
          {"100 binaries of 90 kB at a bit offset", bit_offset_binaries(), 256}
        ]

        for {name, term, samples} <- cases do
          stats =
            Harness.repeat(200, fn ->
              GuildKit.Native.memory_estimate(term, samples, 0, :infinity)
            end)

          [
            name,
            Harness.format_ns(stats.median),
            Harness.format_ns(stats.p99),
            Harness.format_ns(stats.max)
          ]
        end
      end)

    IO.puts("## Normal-scheduler attempts that exhaust their budget (then go dirty)\n")
    Harness.table(["input", "median", "p99", "max"], rows)
  end

  # The worst normal-scheduler stall of each public function over the hostile corpus
  # (long_schedule at its 1 ms floor, measured on the calling process, return path
  # included), each kind of term alone and all together. Target: under 2 ms.
  defp stalls do
    corpus = Gen.hostile()
    {:ok, server} = Agent.start(fn -> corpus end)
    terms = [corpus | Map.values(corpus)]

    functions = [
      {"estimate/2", fn term -> MemoryEstimator.estimate(term).words end},
      {"estimate/2, samples: 100_000",
       fn term -> MemoryEstimator.estimate(term, samples: 100_000).words end},
      {"exact/1", fn term -> MemoryEstimator.exact(term).words end},
      {"breakdown/2", fn term -> length(MemoryEstimator.breakdown(term)) end},
      {"breakdown/2, depth: 1_000_000",
       fn term -> length(MemoryEstimator.breakdown(term, depth: 1_000_000)) end}
    ]

    rows =
      for {name, fun} <- functions do
        worst = terms |> Enum.map(&worst_stall(fn -> &1 end, fun)) |> Enum.max()
        [name, stall(worst)]
      end

    process =
      worst_stall(
        fn -> server end,
        &elem(MemoryEstimator.process(&1, depth: 1_000_000, timeout: 60_000), 0)
      )

    Agent.stop(server)

    IO.puts("## Worst normal-scheduler stall per public function, hostile corpus\n")

    Harness.table(
      ["function", "worst stall (long_schedule, 1 ms floor)"],
      rows ++ [["process/2 (caller)", stall(process)]]
    )

    IO.puts("")
  end

  defp worst_stall(setup, fun) do
    {_, reports} =
      GuildKit.Test.LongSchedule.measure(setup, fun, threshold_ms: 1, min_heap_words: 20_000_000)

    reports |> Enum.map(&Keyword.fetch!(&1, :timeout)) |> Enum.max(fn -> 0 end)
  end

  defp stall(0), do: "< 1 ms"
  defp stall(ms), do: "#{ms} ms"

  defp bit_offset_binaries do
    parent = :binary.copy("y", 90_002)
    for _ <- 1..100, do: (fn <<_::1, x::binary-size(90_000), _::bitstring>> -> x end).(parent)
  end

  defmodule Server do
    @moduledoc false
    use GenServer
    def init(build), do: {:ok, build.()}
    def handle_call(:words, _from, state), do: {:reply, :erts_debug.flat_size(state), state}
  end
end

GuildKit.Bench.MemoryEstimator.run()

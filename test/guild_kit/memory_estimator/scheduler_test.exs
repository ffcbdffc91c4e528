defmodule GuildKit.MemoryEstimator.SchedulerTest do
  # No call may hold a normal scheduler for long: full walks run on dirty schedulers,
  # and normal-scheduler attempts stop within their budget. Watched with the VM's
  # long_schedule monitor, as shared/FACTS.md describes.
  use ExUnit.Case, async: false

  alias GuildKit.MemoryEstimator
  alias GuildKit.Test.EstimatorTerms, as: Gen

  @moduletag :slow

  # Above the OS scheduling noise of a shared 2-core machine, far below what a walk of
  # these inputs on a normal scheduler takes (the control below).
  @threshold_ms 10

  test "estimate, exact, breakdown and process on large inputs are never reported" do
    reports =
      watch(fn inputs, server ->
        for term <- Map.values(inputs) do
          MemoryEstimator.estimate(term)
          MemoryEstimator.estimate(term, samples: 100_000)
          MemoryEstimator.exact(term)
          MemoryEstimator.breakdown(term)
        end

        {:ok, _} = MemoryEstimator.process(server, timeout: 60_000)
      end)

    assert reports == [], inspect(reports)
  end

  test "the monitor does catch a long walk on a normal scheduler (control)" do
    # :erlang.external_size/1 walks the whole term without yielding (as flat_size does,
    # but flat_size of a freshly collected map can finish under the threshold). The
    # results are used, so that the compiler keeps the calls.
    reports =
      watch(fn inputs, _server ->
        Enum.sum(for _ <- 1..3, do: :erlang.external_size(inputs.members))
      end)

    assert length(reports) >= 1
  end

  # Builds the inputs in a worker, and a guild state in an Agent, each with a heap big
  # enough that nothing done later needs a garbage collection (which would show up as
  # long_schedule too: 16 ms was seen with a heap only just big enough); throws away the
  # reports so far, runs `calls` in the worker and returns the reports about either
  # process.
  defp watch(calls) do
    test = self()
    previous = :erlang.system_monitor(self(), [{:long_schedule, @threshold_ms}])

    {:ok, server} =
      Agent.start_link(fn -> elem(Gen.guild_state(300_000, Gen.seed(9)), 0) end,
        spawn_opt: [min_heap_size: 30_000_000]
      )

    worker =
      :erlang.spawn_opt(
        fn ->
          inputs = inputs()
          # Start from a clean heap, far below its minimum size.
          :erlang.garbage_collect()
          send(test, {:built, self()})
          receive do: (:go -> calls.(inputs, server))
          send(test, {:done, self()})
        end,
        [:link, min_heap_size: 150_000_000]
      )

    assert_receive {:built, ^worker}, 120_000
    flush_reports()
    send(worker, :go)
    assert_receive {:done, ^worker}, 300_000
    # The VM sends monitor reports through its system-message dispatcher, after the
    # fact: give the last ones time to arrive.
    Process.sleep(500)

    reports =
      for {:monitor, pid, :long_schedule, info} <- flush_reports(),
          pid in [worker, server],
          do: info

    restore(previous)
    Agent.stop(server)
    reports
  end

  defp inputs do
    {members, rand} = Gen.members(1_000_000, Gen.seed(1))
    {guild, _} = Gen.guild_state(200_000, rand)

    %{
      members: members,
      list: Enum.map(1..1_000_000, &%{id: &1, n: &1 * 2}),
      tuple: List.to_tuple(Enum.map(1..1_000_000, &{&1, &1 * 1.0})),
      deep: Enum.reduce(1..1_000_000, [], fn _, acc -> [acc] end),
      guild: guild,
      refs: Enum.map(1..100_000, fn _ -> make_ref() end),
      funs: [fn -> guild end | Enum.map(1..1000, fn i -> fn -> {i, "captured"} end end)]
    }
  end

  defp flush_reports(acc \\ []) do
    receive do
      {:monitor, _, :long_schedule, _} = report -> flush_reports([report | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  defp restore(:undefined), do: :erlang.system_monitor(:undefined)
  defp restore({pid, options}), do: :erlang.system_monitor(pid, options)
end

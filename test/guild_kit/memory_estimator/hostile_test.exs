defmodule GuildKit.MemoryEstimator.HostileTest do
  # Regression tests for the hardening issue: inputs an attacker or a careless user
  # would pass, each one of a class (huge payloads under closures, deep closures,
  # suspended and slow targets, bad names, deep maps with a huge :depth).
  #
  # Not async: some tests measure the whole VM's memory (RSS, :erlang.memory/1) and
  # timings, which tests running alongside would add to.
  use ExUnit.Case, async: false

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Estimate

  # Compiled closures (not erl_eval's, which capture every binding).
  defp capture(a), do: fn -> a end
  defp capture(a, b), do: fn -> {a, b} end
  defp chain(depth), do: Enum.reduce(1..depth, :leaf, fn _, inner -> capture(inner) end)

  defp rss_bytes do
    [kb] =
      Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"), capture: :all_but_first)

    String.to_integer(kb) * 1024
  end

  # The median times of `a` and `b` over `runs` runs each, taken in turns so that a
  # change of load affects both alike.
  defp median_micros(runs, a, b) do
    {times_a, times_b} =
      Enum.unzip(for _ <- 1..runs, do: {elem(:timer.tc(a), 0), elem(:timer.tc(b), 0)})

    {median(times_a), median(times_b)}
  end

  defp median(times), do: Enum.at(Enum.sort(times), div(length(times), 2))

  describe "closures over huge payloads" do
    @tag :slow
    test "a memory-capped VM sizes 100 closures over a 50 MB binary" do
      # The issue's example, in a child VM limited to 3.5 GB of address space, where
      # copying what the closures capture aborted it.
      script = """
      defmodule Capture, do: def(f(i, big), do: fn -> {i, big} end)
      big = :binary.copy("z", 50_000_000)
      funs = for i <- 1..100, do: Capture.f(i, big)
      e = GuildKit.MemoryEstimator.estimate(funs)
      x = GuildKit.MemoryEstimator.exact(funs)
      IO.puts("words=\#{e.words} exact=\#{x.words} flat=\#{:erts_debug.flat_size(funs)}")
      """

      paths = Enum.flat_map(:code.get_path(), &["-pa", List.to_string(&1)])
      command = Enum.map_join(["elixir" | paths] ++ ["-e", script], " ", &shell_quote/1)

      {output, status} =
        System.cmd("sh", ["-c", "ulimit -v 3500000 && exec " <> command], stderr_to_stdout: true)

      assert status == 0, output
      assert output =~ "words=1500 exact=1500 flat=1500"
    end

    test "closures capturing a big binary are sized without copying it" do
      big = :binary.copy("z", 50_000_000)
      funs = for i <- 1..100, do: capture(i, big)
      MemoryEstimator.exact(1)
      :erlang.garbage_collect()
      {rss, total} = {rss_bytes(), :erlang.memory(:total)}

      estimate = MemoryEstimator.estimate(funs)
      exact = MemoryEstimator.exact(funs)
      breakdown = MemoryEstimator.breakdown(%{funs: funs}, samples: 1000)

      assert rss_bytes() - rss < 20_000_000
      assert :erlang.memory(:total) - total < 20_000_000
      assert exact.words == :erts_debug.flat_size(funs)
      assert %Estimate{words: 1500, off_heap_binary_bytes: 5_000_000_000} = exact
      assert estimate == exact
      assert [{[], %Estimate{exact?: true}}, {[:funs], ^exact}] = breakdown
    end

    test "funs, sub-binaries and bitstrings inside funs are exact" do
      <<_::5, shifted::bitstring-size(80_003), _::bitstring>> = :binary.copy("s", 20_000)
      term = capture([shifted, capture(<<1::3>>)], {capture(2 ** 300), :erlang.alias()})
      assert MemoryEstimator.exact(term).words == :erts_debug.flat_size(term)
    end
  end

  describe "nested closures" do
    test "take linear time: 8,000 levels cost about twice 4,000" do
      short = chain(4000)
      long = chain(8000)
      assert MemoryEstimator.exact(long).words == :erts_debug.flat_size(long)

      for size <- [&MemoryEstimator.exact/1, &MemoryEstimator.estimate/1] do
        size.(long)
        {t_short, t_long} = median_micros(21, fn -> size.(short) end, fn -> size.(long) end)
        # Quadratic would be 4x; allow noise on a shared machine.
        assert t_long < 3 * t_short + 200, "4,000: #{t_short} µs, 8,000: #{t_long} µs"
        assert t_long < 50_000
      end
    end

    test "a million levels, in a breakdown and inside a process" do
      deep = chain(1_000_000)
      assert MemoryEstimator.exact(deep).words == 6_000_000

      assert [{[], %Estimate{words: 6_000_006}}, {[:f], _}] =
               MemoryEstimator.breakdown(%{f: deep})

      {:ok, agent} = Agent.start_link(fn -> chain(7000) end)
      assert {:ok, [{[], %Estimate{words: 42_000}}]} = MemoryEstimator.process(agent)
    end
  end

  describe "process/2" do
    test "measures a suspended process, which stays suspended and unchanged" do
      {:ok, agent} = Agent.start_link(fn -> %{members: Map.new(1..100, &{&1, &1})} end)
      state = Agent.get(agent, & &1)
      :ok = :sys.suspend(agent)

      assert {:ok, [{[], total} | _]} = MemoryEstimator.process(agent)
      assert total.words == :erts_debug.flat_size(state)
      assert {:status, :suspended} = status(agent)

      :ok = :sys.resume(agent)
      assert Agent.get(agent, & &1) == state
    end

    test "a suspended gen_event manager is still refused" do
      {:ok, manager} = :gen_event.start_link()
      :ok = :sys.suspend(manager)
      assert MemoryEstimator.process(manager) == {:error, :not_sys_process}
      :ok = :sys.resume(manager)
    end

    @tag :slow
    test "after a timeout the target is not left busy with the measurement" do
      # 100 distinct 10 MB keys: a full measurement hashes a gigabyte, about half a
      # second or more, and gives up at the deadline instead.
      big = :rand.bytes(20_000_000)
      state = Map.new(1..100, fn i -> {binary_part(big, i * 1000, 10_000_000), i} end)
      {:ok, agent} = Agent.start_link(fn -> state end)

      {waited, result} = :timer.tc(fn -> MemoryEstimator.process(agent, timeout: 50) end)
      assert result == {:error, :timeout}
      assert waited < 1_000_000

      {answered, :ok} = :timer.tc(fn -> Agent.get(agent, fn _ -> :ok end, 5000) end)
      assert answered < 200_000, "the target answered after #{answered} µs"
      assert Process.info(self(), :messages) == {:messages, []}

      # Given the time, the same measurement succeeds.
      assert {:ok, [{[], %Estimate{exact?: true}}]} =
               MemoryEstimator.process(agent, timeout: 60_000)
    end

    test "every accepted server form, and bad ones" do
      {:ok, agent} = Agent.start_link(fn -> %{a: 1} end)
      name = :"hostile_test_#{System.unique_integer([:positive])}"
      Process.register(agent, name)
      :yes = :global.register_name({__MODULE__, name}, agent)

      for server <- [agent, name, {name, node()}, {:global, {__MODULE__, name}}] do
        assert {:ok, [{[], %Estimate{words: 6}} | _]} = MemoryEstimator.process(server)
      end

      :global.unregister_name({__MODULE__, name})
      assert MemoryEstimator.process({:global, {__MODULE__, name}}) == {:error, :noproc}
      assert MemoryEstimator.process({:nobody, node()}) == {:error, :noproc}

      assert MemoryEstimator.process({name, :"nobody@127.0.0.1"}) ==
               {:error, {:nodedown, :"nobody@127.0.0.1"}}

      for server <- [{:via, :nonexistent_mod, :x}, {:via, String, :x}] do
        assert_raise ArgumentError, ~r/exports whereis_name\/1, got: #{inspect(server)}/, fn ->
          MemoryEstimator.process(server)
        end
      end

      for server <- ["name", {:via, "mod", :x}, {name, "node"}, 42, make_ref()] do
        assert_raise ArgumentError, ~r/expected a pid or a process name/, fn ->
          MemoryEstimator.process(server)
        end
      end
    end
  end

  describe "breakdown/2 bounds" do
    test "a huge :depth on an 8,000-deep chain of maps" do
      chain = Enum.reduce(1..8000, %{}, fn i, inner -> %{i => inner} end)

      {micros, breakdown} =
        :timer.tc(fn -> MemoryEstimator.breakdown(chain, depth: 1_000_000_000) end)

      assert [{[], root} | fields] = breakdown
      assert root.words == :erts_debug.flat_size(chain)
      assert length(fields) <= 1000
      assert Enum.sum(Enum.map(fields, fn {path, _} -> length(path) end)) <= 10_000
      assert :erts_debug.flat_size(breakdown) < 200_000
      assert micros < 1_000_000
    end

    test "wide maps of wide maps are broken down breadth-first, within bounds" do
      level3 = Map.new(1..32, &{&1, &1 * 1.0})
      level2 = Map.new(1..32, &{&1, level3})
      term = Map.new(1..32, &{&1, level2})

      assert [{[], root} | fields] = MemoryEstimator.breakdown(term, depth: 10)
      assert root.words == :erts_debug.flat_size(term)
      assert length(fields) <= 1000
      # Every field of the first level, and each second-level map whole or not at all.
      paths = Enum.map(fields, &elem(&1, 0))
      assert Enum.all?(1..32, &([&1] in paths))

      for {[first, second], _} <- fields, second == 1 do
        assert Enum.all?(1..32, &([first, &1] in paths))
      end
    end
  end

  defp status(pid) do
    {:status, _, _, [_, status | _]} = :sys.get_status(pid)
    {:status, status}
  end

  defp shell_quote(word), do: "'" <> String.replace(word, "'", "'\\''") <> "'"
end

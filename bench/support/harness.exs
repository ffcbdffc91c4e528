defmodule GuildKit.Bench.Harness do
  @moduledoc """
  A small benchmark harness (Benchee cannot be installed: hex.pm is unreachable).

  Latencies are measured one call at a time with `:erlang.monotonic_time/1`, the samples
  kept in an `:atomics` array so that measuring allocates nothing, inside a process
  whose heap is large enough that no garbage collection runs during a measurement
  (which favours the pure-Erlang baselines, whose garbage is never collected there).
  """

  @doc "Runs `fun` in a fresh process with a large heap and returns its result."
  def in_big_process(fun, min_heap_words \\ 50_000_000) do
    {pid, ref} =
      :erlang.spawn_opt(fn -> exit({:ok, fun.()}) end, [:monitor, min_heap_size: min_heap_words])

    receive do
      {:DOWN, ^ref, :process, ^pid, {:ok, result}} -> result
      {:DOWN, ^ref, :process, ^pid, reason} -> raise "benchmark crashed: #{inspect(reason)}"
    end
  end

  @doc """
  Calls `fun.(input)` once per input, timing each call. Returns latency stats in ns.
  """
  def per_call(inputs, fun) do
    n = length(inputs)
    samples = :atomics.new(n, signed: false)

    Enum.reduce(inputs, 1, fn input, i ->
      t0 = :erlang.monotonic_time(:nanosecond)
      fun.(input)
      :atomics.put(samples, i, :erlang.monotonic_time(:nanosecond) - t0)
      i + 1
    end)

    stats(for i <- 1..n, do: :atomics.get(samples, i))
  end

  @doc """
  Like `per_call/2` for a function that threads a state (e.g. an immutable set):
  `fun.(input, state)` returns the next state. Returns `{stats, final_state}`.
  """
  def per_call_threaded(inputs, state, fun) do
    n = length(inputs)
    samples = :atomics.new(n, signed: false)

    {final, _} =
      Enum.reduce(inputs, {state, 1}, fn input, {state, i} ->
        t0 = :erlang.monotonic_time(:nanosecond)
        state = fun.(input, state)
        :atomics.put(samples, i, :erlang.monotonic_time(:nanosecond) - t0)
        {state, i + 1}
      end)

    {stats(for i <- 1..n, do: :atomics.get(samples, i)), final}
  end

  @doc "Runs `fun.()` `times` times and returns stats in ns."
  def repeat(times, fun), do: per_call(List.duplicate(nil, times), fn _ -> fun.() end)

  @doc "Median, p99, mean, min and max of samples in ns."
  def stats(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)

    %{
      n: n,
      median: percentile(sorted, n, 0.50),
      p99: percentile(sorted, n, 0.99),
      mean: Enum.sum(sorted) / n,
      min: hd(sorted),
      max: List.last(sorted)
    }
  end

  defp percentile(sorted, n, q), do: Enum.at(sorted, min(n - 1, trunc(q * n)))

  @doc "Formats nanoseconds with a readable unit."
  def format_ns(ns) when ns < 1_000, do: "#{round(ns)} ns"
  def format_ns(ns) when ns < 1_000_000, do: "#{Float.round(ns / 1_000, 2)} µs"
  def format_ns(ns) when ns < 1_000_000_000, do: "#{Float.round(ns / 1_000_000, 2)} ms"
  def format_ns(ns), do: "#{Float.round(ns / 1_000_000_000, 2)} s"

  @doc "The load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives them."
  def load do
    case File.read("/proc/loadavg") do
      {:ok, text} -> text |> String.split() |> Enum.take(3) |> Enum.join(" ")
      _ -> "unknown"
    end
  end

  @doc "A one-line description of the machine and runtime."
  def machine do
    otp = :erlang.system_info(:otp_release)
    erts = :erlang.system_info(:version)
    cores = :erlang.system_info(:logical_processors_available)

    "#{Date.utc_today()} · #{cores} cores · OTP #{otp} (erts #{erts}) · Elixir #{System.version()} · " <>
      "#{:erlang.system_info(:schedulers_online)} schedulers"
  end

  @doc """
  Starts distribution on this node as `name_OSPID@127.0.0.1` and `count` peers
  (`name_peerN_OSPID`) with this node's code paths, after `args` on their command
  lines. Each runs `:guild_kit` and has the module of `{module, beam}` loaded from its
  object code: a bench script's modules exist only in memory (test/support and
  examples/ are not compiled in :prod). Returns the peers' nodes.
  """
  def start_peers(name, count, {module, beam}, args \\ []) do
    {_, 0} = System.cmd("epmd", ["-daemon"])
    {:ok, _} = :net_kernel.start([:"#{name}_#{System.pid()}@127.0.0.1", :longnames])
    otp = :code.lib_dir()
    paths = :code.get_path() |> Enum.reject(&List.starts_with?(&1, otp))
    args = args ++ Enum.flat_map(paths, &[~c"-pa", &1])

    for i <- 1..count do
      peer_name = :"#{name}_peer#{i}_#{System.pid()}"

      {:ok, _peer, node} =
        :peer.start_link(%{name: peer_name, host: ~c"127.0.0.1", longnames: true, args: args})

      {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:guild_kit])
      {:module, ^module} = :erpc.call(node, :code, :load_binary, [module, ~c"bench", beam])
      node
    end
  end

  @doc "Prints a markdown table: `rows` are lists of cells."
  def table(header, rows) do
    widths =
      [header | rows]
      |> Enum.zip_with(& &1)
      |> Enum.map(fn column -> column |> Enum.map(&String.length(to_string(&1))) |> Enum.max() end)

    line = fn cells ->
      cells
      |> Enum.zip(widths)
      |> Enum.map_join(" | ", fn {cell, w} -> String.pad_trailing(to_string(cell), w) end)
      |> then(&"| #{&1} |")
    end

    IO.puts(line.(header))
    IO.puts(line.(Enum.map(widths, &String.duplicate("-", &1))))
    Enum.each(rows, &IO.puts(line.(&1)))
  end
end

defmodule GuildKit.Test.LongSchedule do
  @moduledoc """
  Runs a function in a fresh process and reports every time that process held a normal
  scheduler for `threshold_ms` or more (`:erlang.system_monitor/2`, `long_schedule`).

  Following the platform facts, the input is built first in a process with a heap big
  enough that neither building it nor receiving the result triggers a garbage
  collection (which would show up as a long schedule of its own), older reports are
  flushed, and only reports about that process during the measured call are counted.
  Time on dirty schedulers is never reported.
  """

  @doc """
  Builds the input with `setup.()`, then measures `fun.(input)`. Returns
  `{result, reports}` where `reports` lists the `long_schedule` infos seen during the call.

  `fun` should return a small value: the result is sent back as a message, and copying
  a large one would be measured too.
  """
  @spec measure((() -> input), (input -> result), keyword()) :: {result, [term()]}
        when input: term(), result: term()
  def measure(setup, fun, opts \\ []) do
    threshold = Keyword.get(opts, :threshold_ms, 5)
    min_heap_words = Keyword.get(opts, :min_heap_words, 40_000_000)
    parent = self()
    previous = :erlang.system_monitor()

    {pid, ref} =
      :erlang.spawn_opt(
        fn ->
          input = setup.()
          send(parent, {:ready, self()})
          receive do: (:go -> :ok)
          result = fun.(input)
          send(parent, {:done, self(), result})
        end,
        [:monitor, min_heap_size: min_heap_words]
      )

    receive do
      {:ready, ^pid} -> :ok
      {:DOWN, ^ref, :process, ^pid, reason} -> raise "setup crashed: #{inspect(reason)}"
    end

    :erlang.system_monitor(self(), [{:long_schedule, threshold}])
    flush_reports()
    send(pid, :go)

    result =
      receive do
        {:done, ^pid, result} -> result
        {:DOWN, ^ref, :process, ^pid, reason} -> raise "measured call crashed: #{inspect(reason)}"
      end

    # A report is sent when the process is scheduled out, which may come after its last
    # message: wait for it to exit, and a moment more, before restoring the monitor.
    receive do: ({:DOWN, ^ref, :process, ^pid, _} -> :ok)
    Process.sleep(20)
    restore(previous)
    {result, collect_reports(pid)}
  end

  defp restore(:undefined), do: :erlang.system_monitor(:undefined)
  defp restore({monitor, options}), do: :erlang.system_monitor(monitor, options)

  defp flush_reports do
    receive do
      {:monitor, _, :long_schedule, _} -> flush_reports()
    after
      0 -> :ok
    end
  end

  defp collect_reports(pid) do
    receive do
      {:monitor, ^pid, :long_schedule, info} -> [info | collect_reports(pid)]
      {:monitor, _other, :long_schedule, _info} -> collect_reports(pid)
    after
      0 -> []
    end
  end
end

defmodule GuildKit.Test.HelperProcess do
  @moduledoc """
  How the tests' helper processes (a scheduler watch, a size tracer, a killer) stop:
  each takes `{:stop, from}` and answers `{:stopped, self(), result}` with what it
  gathered.
  """

  import ExUnit.Assertions, only: [flunk: 1]

  @doc """
  Spawns a helper process that runs `setup.()` (tracing, monitoring: whatever must be
  in place before the caller goes on) and then `loop.()`, and returns its pid once
  `setup` is done. Fails with the helper's exit reason if `setup` raises (a process that
  another tracer already traces, say) instead of leaving the caller waiting forever.
  """
  @spec start((() -> term()), (() -> term())) :: pid()
  def start(setup, loop) do
    parent = self()

    {pid, ref} =
      spawn_monitor(fn ->
        setup.()
        send(parent, {:ready, self()})
        loop.()
      end)

    receive do
      {:ready, ^pid} ->
        Process.demonitor(ref, [:flush])
        pid

      {:DOWN, ^ref, :process, ^pid, reason} ->
        flunk("the helper process could not start: #{inspect(reason)}")
    end
  end

  @doc "Stops the helper process `pid` and returns its result; fails after 30 s."
  @spec stop(pid()) :: term()
  def stop(pid) do
    send(pid, {:stop, self()})

    receive do
      {:stopped, ^pid, result} -> result
    after
      30_000 -> flunk("the helper process #{inspect(pid)} did not stop")
    end
  end
end

defmodule GuildKit.Test.HelperProcess do
  @moduledoc """
  How the tests' helper processes (a scheduler watch, a size tracer, a killer) stop:
  each takes `{:stop, from}` and answers `{:stopped, self(), result}` with what it
  gathered.
  """

  import ExUnit.Assertions, only: [flunk: 1]

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

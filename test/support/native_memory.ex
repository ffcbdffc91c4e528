defmodule GuildKit.Test.NativeMemory do
  @moduledoc """
  Reads of `GuildKit.native_memory/0` that wait for the reaper thread: a structure
  dropped by a collection or a process exit is freed there, a little later, and a
  loaded machine may hold that thread off for a while.

      before = GuildKit.Test.NativeMemory.settled()
      # ... build and drop structures ...
      assert GuildKit.Test.NativeMemory.await_at_most(before + 65_536) <= before + 65_536
  """

  @doc """
  Collects every process's garbage (dropping the resources nobody references), then
  reads native memory once it has stayed the same for 100 ms (for at most 2 s).
  """
  @spec settled() :: non_neg_integer()
  def settled do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    stable(GuildKit.native_memory(), 0, 100)
  end

  defp stable(last, 5, _tries), do: last
  defp stable(last, _same, 0), do: last

  defp stable(last, same, tries) do
    Process.sleep(20)

    case GuildKit.native_memory() do
      ^last -> stable(last, same + 1, tries - 1)
      now -> stable(now, 0, tries - 1)
    end
  end

  @doc """
  Collects every process's garbage, then waits until native memory is at most
  `limit` bytes, for up to `timeout` ms, and returns the last reading: above `limit`
  only when it never got there.
  """
  @spec await_at_most(non_neg_integer(), timeout()) :: non_neg_integer()
  def await_at_most(limit, timeout \\ 10_000) do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    await(limit, System.monotonic_time(:millisecond) + timeout)
  end

  defp await(limit, deadline) do
    now = GuildKit.native_memory()

    if now <= limit or System.monotonic_time(:millisecond) > deadline do
      now
    else
      Process.sleep(10)
      await(limit, deadline)
    end
  end
end

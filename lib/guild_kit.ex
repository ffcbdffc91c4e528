defmodule GuildKit do
  @moduledoc """
  Rust-powered building blocks for a guild process that coordinates a million members.

  A guild is one GenServer that tracks its members and fans every event out to the
  processes of connected users. GuildKit provides the parts that break first at scale:

    * `GuildKit.SortedSet` - an ordered set of Erlang terms in exact Erlang term order,
      with rank queries (the index of a member, the member at an index, slices) in
      O(log n), and O(1) read-only snapshots.
    * `GuildKit.MemberList` - the grouped member sidebar that clients watch in windows
      of rows, with the insert/update/delete ops each watched window needs after every
      change, computed in Rust.
    * `GuildKit.MemoryEstimator` - the memory of a term, exactly as
      `:erts_debug.flat_size/1` counts it or estimated by sampling in time independent
      of its size,
      and the memory of a live process's state broken down by field, measured inside
      the process without copying the state out.
    * `GuildKit.Fanout` - sends one message to many processes on any nodes, Manifold
      style: one message per node, per-receiver order in every mode, no loss when a
      worker dies, and no blocking on unreachable nodes.

  The CPU-heavy work runs in Rust NIFs that never hold a normal scheduler for more than
  about a millisecond: anything whose cost grows with its input runs on a dirty CPU
  scheduler or in bounded chunks, and bad input raises `ArgumentError`.
  """

  @doc """
  Returns the bytes of memory GuildKit's native code holds right now: every sorted set,
  member list and snapshot, plus scratch buffers.

  Large structures are freed on a background thread, so the figure can lag a drop by a
  few milliseconds.

  ## Examples

      iex> GuildKit.native_memory() >= 0
      true

  ## Performance

  O(1): a counter kept by the NIF library's allocator.
  """
  @spec native_memory() :: non_neg_integer()
  def native_memory, do: max(GuildKit.Native.native_memory(), 0)
end

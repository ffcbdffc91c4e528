defmodule GuildKit.MemberList do
  @moduledoc """
  A Discord-style lazy member list: grouped, windowed, and diffed in Rust.

  Clients see one flat list of rows: for each non-empty group, in the order the groups
  were given to `new/1`, a header row `{:group, group_id}` followed by that group's
  members `{:member, member_id}`, ordered by sort key (a display name, say) and then by
  id. A client never holds a million rows: it watches windows (ranges of rows such as
  `{0, 99}`), and after every change the list reports, for each watched window whose
  rows changed, the operations that bring the client's copy up to date.

      iex> list = GuildKit.MemberList.new(groups: [:admins, :online, :offline])
      iex> GuildKit.MemberList.watch(list, {0, 99})
      []
      iex> GuildKit.MemberList.put(list, 7, :online, "zoe")
      [{{0, 99}, [{:insert, 0, {:group, :online}}, {:insert, 1, {:member, 7}}]}]
      iex> GuildKit.MemberList.put(list, 3, :online, "amy")
      [{{0, 99}, [{:insert, 1, {:member, 3}}]}]
      iex> GuildKit.MemberList.rows(list, 0, 99)
      [{:group, :online}, {:member, 3}, {:member, 7}]

  ## Ops and the client rule

  An op is `{:insert, index, row}`, `{:update, index, row}` or `{:delete, index}`, with
  an absolute row index that always lies inside the window it is listed under. A client
  keeps exactly the rows of its window, applies the ops in order, and after an insert
  drops the rows that fell past the window's last index. So a change above a window
  reaches it as the row that shifted in at its edge, a change below it produces
  nothing, and a window whose rows are the same after a change gets no entry at all.

  `put/4`, `touch/2` and `remove/2` return `[{range, ops}]` for the watched windows that
  changed, in window order. Windows are reference-counted: a window watched by many
  sessions is stored and reported once, and is dropped after as many `unwatch/2` calls
  as `watch/2` calls.

  ## Terms

  Member ids, group ids and sort keys are any terms `GuildKit.SortedSet` supports, in
  Erlang term order. Bad input or an unknown group raises `ArgumentError` and changes
  nothing.

  Terms are compared as `==` compares them, as everywhere in GuildKit: `2` and `2.0`
  are the same member, and `{:role, 1.0}` selects the group `{:role, 1}`. A list shows
  the member id it was last given: `put/4` with an id equal to the stored one but not
  identical (`2.0` for `2`, `-0.0` for `0.0`, or the same inside a tuple or map) stores
  the new term and reports it, as an `:update` of the row where the member stays, or in
  the `:insert` where it moves, so clients never keep a stale id. A sort key that is
  equal but not identical changes no row, so it is stored without ops. Headers show the
  group ids given to `new/1`.

  ## Snapshots

  `snapshot/1` returns a read-only view of the list as it is, in O(1). A worker
  process can read rows, indexes and groups from it while the list keeps changing;
  changing a snapshot raises `ArgumentError`.

  ## Concurrency, scheduling, memory

  Like `GuildKit.SortedSet`, a list is a mutable handle to native memory, safe to use
  from any process. A change costs O(log n) plus a constant for each watched window it
  reaches; windows it cannot reach (past the end of the list, or above the change) cost
  nothing. Every call runs on the caller's normal scheduler for a bounded time: results
  of many rows or windows are built in bounded chunks, each budgeted in bytes of rows
  and in windows, from a snapshot, so they reach the caller without a long pause and
  without holding up writers. Only a single row or argument too large for one chunk is
  handled on a dirty CPU scheduler. Memory per member is measured in
  [bench/RESULTS.md](bench/RESULTS.md) (see `memory/1`).
  """

  alias GuildKit.Native

  @enforce_keys [:ref]
  defstruct [:ref]

  @typedoc "A member list handle."
  @opaque t :: %__MODULE__{ref: reference()}

  @typedoc "A window of rows: first and last index, inclusive."
  @type range :: {non_neg_integer(), non_neg_integer()}

  @typedoc "A row of the flat list."
  @type row :: {:group, term()} | {:member, term()}

  @typedoc "One edit of a window's copy."
  @type op ::
          {:insert, non_neg_integer(), row()}
          | {:update, non_neg_integer(), row()}
          | {:delete, non_neg_integer()}

  @typedoc "The ops for each watched window that changed."
  @type changes :: [{range(), [op()]}]

  @max_native_index 0xFFFF_FFFF_FFFF_FFFF

  @doc """
  Returns an empty list whose groups are shown in the given order.

  ## Options

    * `:groups` (required) - the group ids in display order: hoisted roles by position,
      then for example `:online` and `:offline`. Groups that are equal (`1` and `1.0`)
      are duplicates, which raise `ArgumentError`; at most 65,535 groups.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online, :offline])
      iex> GuildKit.MemberList.size(list)
      0

  ## Performance

  O(groups × log groups).
  """
  @spec new(keyword()) :: t()
  def new(opts) do
    opts = GuildKit.Describe.options!(opts, [:groups])

    case opts[:groups] do
      groups when is_list(groups) ->
        %__MODULE__{ref: Native.member_list_new(groups)}

      other ->
        raise ArgumentError,
              "expected :groups to be a list of group ids, got: #{GuildKit.Describe.describe(other)}"
    end
  end

  @doc """
  Adds a member to `group_id` with `sort_key`, or moves it there if present. Returns the
  ops for the watched windows whose rows changed.

  Moving a member is a delete and an insert (nothing when its row does not change); a
  group appearing or emptying adds or removes its header row. A member put again with
  an id equal to the stored one but not identical (`2.0` for `2`) is shown with the new
  id: windows showing its row get an `:update`.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online, :offline])
      iex> GuildKit.MemberList.put(list, 1, :offline, "bob")
      []
      iex> GuildKit.MemberList.watch(list, {0, 9})
      [{:group, :offline}, {:member, 1}]
      iex> GuildKit.MemberList.put(list, 1, :online, "bob")
      [{{0, 9}, [{:delete, 0}, {:insert, 0, {:group, :online}}]}]
      iex> GuildKit.MemberList.put(list, 1.0, :online, "bob")
      [{{0, 9}, [{:update, 1, {:member, 1.0}}]}]

  Here the member kept its row; only the header above it changed.

  ## Performance

  O(log n + log groups) plus O(1) for each watched window whose rows changed. Windows
  the change cannot reach are never visited. Many changed windows are delivered in
  bounded chunks.
  """
  @spec put(t(), term(), term(), term()) :: changes()
  def put(%__MODULE__{ref: ref}, member_id, group_id, sort_key) do
    ref |> Native.member_list_put(member_id, group_id, sort_key) |> deliver()
  end

  def put(other, _member_id, _group_id, _sort_key), do: raise_not_a_list(other)

  @doc """
  Marks a member's displayed data as changed without moving it: an `:update` op for each
  watched window showing its row. Returns `[]` when the member is absent.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.watch(list, {0, 9})
      iex> GuildKit.MemberList.touch(list, 1)
      [{{0, 9}, [{:update, 1, {:member, 1}}]}]

  ## Performance

  O(log n) plus O(1) per window showing the member, delivered in bounded chunks.
  """
  @spec touch(t(), term()) :: changes()
  def touch(%__MODULE__{ref: ref}, member_id) do
    ref |> Native.member_list_touch(member_id) |> deliver()
  end

  def touch(other, _member_id), do: raise_not_a_list(other)

  @doc """
  Removes a member. Returns the ops, or `[]` when the member is absent.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.put(list, 2, :online, "bob")
      iex> GuildKit.MemberList.watch(list, {0, 9})
      iex> GuildKit.MemberList.remove(list, 1)
      [{{0, 9}, [{:delete, 1}]}]

  ## Performance

  O(log n + log groups) plus O(1) for each watched window whose rows changed.
  """
  @spec remove(t(), term()) :: changes()
  def remove(%__MODULE__{ref: ref}, member_id) do
    ref |> Native.member_list_remove(member_id) |> deliver()
  end

  def remove(other, _member_id), do: raise_not_a_list(other)

  @doc """
  Starts watching `range` and returns its rows now (the SYNC). The window is watched
  until a matching `unwatch/2`; watching the same window twice needs two unwatches.

  The rows are those of the list right after the window was added, so the ops of every
  later change apply to them, even when other processes change the list meanwhile.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.watch(list, {0, 99})
      [{:group, :online}, {:member, 1}]

  ## Performance

  O(log windows + log n + rows returned); many rows are read in bounded chunks from a
  snapshot, without holding up writers.
  """
  @spec watch(t(), range()) :: [row()]
  def watch(%__MODULE__{ref: ref}, range) do
    {first, last} = validate_range!(range)
    ref |> Native.member_list_watch(first, last) |> deliver()
  end

  def watch(other, _range), do: raise_not_a_list(other)

  @doc """
  Stops one watch of `range`. Returns `:ok`, also when the range was not watched.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.watch(list, {0, 9})
      iex> GuildKit.MemberList.unwatch(list, {0, 9})
      :ok

  ## Performance

  O(log windows).
  """
  @spec unwatch(t(), range()) :: :ok
  def unwatch(%__MODULE__{ref: ref}, range) do
    {first, last} = validate_range!(range)
    Native.member_list_unwatch(ref, first, last)
    :ok
  end

  def unwatch(other, _range), do: raise_not_a_list(other)

  @doc """
  Returns the rows `first..last` that exist.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.rows(list, 1, 10)
      [{:member, 1}]

  ## Performance

  O(log n + rows returned); many rows are read in bounded chunks from a snapshot,
  without holding up writers.
  """
  @spec rows(t(), non_neg_integer(), non_neg_integer()) :: [row()]
  def rows(%__MODULE__{ref: ref}, first, last) do
    {first, last} = validate_range!({first, last})
    ref |> Native.member_list_rows(first, last) |> deliver()
  end

  def rows(other, _first, _last), do: raise_not_a_list(other)

  @doc """
  Returns the row index of a member, or `nil` when it is absent.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, :ada, :online, "ada")
      iex> GuildKit.MemberList.index_of(list, :ada)
      1
      iex> GuildKit.MemberList.index_of(list, :bob)
      nil

  ## Performance

  O(log n).
  """
  @spec index_of(t(), term()) :: non_neg_integer() | nil
  def index_of(%__MODULE__{ref: ref}, member_id) do
    Native.member_list_index_of(ref, member_id)
  end

  def index_of(other, _member_id), do: raise_not_a_list(other)

  @doc """
  Returns `[{group_id, member_count}]` for the non-empty groups, in display order.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:admins, :online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.groups(list)
      [{:online, 1}]

  ## Performance

  O(groups), in bounded chunks.
  """
  @spec groups(t()) :: [{term(), pos_integer()}]
  def groups(%__MODULE__{ref: ref}), do: ref |> Native.member_list_groups() |> deliver()
  def groups(other), do: raise_not_a_list(other)

  @doc """
  Returns the number of rows, group headers included.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.size(list)
      2

  ## Performance

  O(1).
  """
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{ref: ref}), do: Native.member_list_size(ref)
  def size(other), do: raise_not_a_list(other)

  @doc """
  Returns the number of members.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> GuildKit.MemberList.member_count(list)
      1

  ## Performance

  O(1).
  """
  @spec member_count(t()) :: non_neg_integer()
  def member_count(%__MODULE__{ref: ref}), do: Native.member_list_member_count(ref)
  def member_count(other), do: raise_not_a_list(other)

  @doc """
  Returns a read-only view of the list as it is now.

  Later changes to `list` do not affect the snapshot, and changing the snapshot
  (`put/4`, `touch/2`, `remove/2`, `watch/2`, `unwatch/2`) raises `ArgumentError`.
  Reads (`rows/3`, `index_of/2`, `groups/1`, `size/1`, ...) work on it from any
  process. A snapshot of a snapshot is the snapshot itself.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> GuildKit.MemberList.put(list, 1, :online, "amy")
      iex> snapshot = GuildKit.MemberList.snapshot(list)
      iex> GuildKit.MemberList.put(list, 2, :online, "bob")
      iex> {GuildKit.MemberList.rows(snapshot, 0, 9), GuildKit.MemberList.size(list)}
      {[{:group, :online}, {:member, 1}], 3}
      iex> GuildKit.MemberList.put(snapshot, 3, :online, "cy")
      ** (ArgumentError) this GuildKit.MemberList is a read-only snapshot and cannot be changed

  ## Performance

  O(1). The snapshot shares all of its native memory with `list`; the first write to
  `list` after it copies the O(log n) nodes on its path.
  """
  @spec snapshot(t()) :: t()
  def snapshot(%__MODULE__{ref: ref}), do: %__MODULE__{ref: Native.member_list_snapshot(ref)}
  def snapshot(other), do: raise_not_a_list(other)

  @doc """
  Returns the contents of `list` as one binary, which `from_binary/1` turns back into
  an equal list: on another node, in another process, or after a file round trip.

  The dump holds the groups, every member (id, group and sort key, exactly as put),
  and the watched windows with their watch counts, in the self-describing, versioned
  format of `GuildKit.SortedSet.to_binary/1` (a magic header, the format version, the
  kind of structure, counts and a CRC-32 checksum). It is an ordinary binary: it can be
  stored, sent to another node or wrapped in `:erlang.term_to_binary/1`.

  The dump is written from an O(1) snapshot of `list`, so writers are never held up,
  and it is one refcounted binary outside the caller's heap.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online, :offline])
      iex> GuildKit.MemberList.put(list, 7, :online, "zoe")
      iex> GuildKit.MemberList.watch(list, {0, 9})
      iex> copy = GuildKit.MemberList.from_binary(GuildKit.MemberList.to_binary(list))
      iex> GuildKit.MemberList.rows(copy, 0, 9)
      [{:group, :online}, {:member, 7}]
      iex> GuildKit.MemberList.put(copy, 3, :online, "amy")
      [{{0, 9}, [{:insert, 1, {:member, 3}}]}]

  ## Performance

  O(n) in the bytes of the list's two trees (the rows and the id index), plus O(w) for
  its windows, with no term built. Dumps of more than 64 KiB are written on a dirty
  CPU scheduler.
  """
  @spec to_binary(t()) :: binary()
  def to_binary(%__MODULE__{ref: ref}), do: Native.member_list_to_binary(ref)
  def to_binary(other), do: raise_not_a_list(other)

  @doc """
  Returns a new list with the contents of a dump made by `to_binary/1`.

  The result is an ordinary, writable list that shares nothing with the dumped one:
  the same `rows/3`, `index_of/2`, `groups/1`, `size/1` and watched windows (with their
  watch counts), so later changes report the same ops for the same windows.

  Raises `ArgumentError`, and builds nothing, for any binary that is not a whole,
  intact dump of a member list: truncated or extended, corrupted (checksum), not a dump
  or a dump of another structure (foreign), or of a later format version. The contents
  are validated too (every term well formed, rows in order with one header per
  non-empty group, an id index that matches the rows, sane windows), so even a dump
  forged with a matching checksum cannot build an invalid list.

  ## Examples

      iex> GuildKit.MemberList.from_binary("not a dump")
      ** (ArgumentError) cannot load a GuildKit.MemberList from this binary: not a GuildKit dump (its first bytes are not the dump magic)

  ## Performance

  O(n) in the bytes of the dump, plus O(w log w) for its windows: both trees are built
  bottom-up from their sorted elements, without sorting or decoding a term. Dumps of
  more than 64 KiB are loaded on a dirty CPU scheduler.
  """
  @spec from_binary(binary()) :: t()
  def from_binary(binary) when is_binary(binary),
    do: %__MODULE__{ref: Native.member_list_from_binary(binary)}

  def from_binary(other),
    do: GuildKit.Describe.raise_not_a_dump(other, "GuildKit.MemberList.to_binary/1")

  @doc """
  Returns the bytes of native memory held by the list. Memory shared with snapshots is
  counted in full for each of them.

  ## Examples

      iex> GuildKit.MemberList.new(groups: [:online]) |> GuildKit.MemberList.memory() > 0
      true

  ## Performance

  O(n / 64), on a dirty CPU scheduler when the list is large.
  """
  @spec memory(t()) :: non_neg_integer()
  def memory(%__MODULE__{ref: ref}), do: Native.member_list_memory(ref)
  def memory(other), do: raise_not_a_list(other)

  @doc """
  Whether `list` is a read-only snapshot (see `snapshot/1`), which raises
  `ArgumentError` on every change.

  ## Examples

      iex> list = GuildKit.MemberList.new(groups: [:online])
      iex> {GuildKit.MemberList.read_only?(list), GuildKit.MemberList.read_only?(GuildKit.MemberList.snapshot(list))}
      {false, true}

  ## Performance

  O(1).
  """
  @spec read_only?(t()) :: boolean()
  def read_only?(%__MODULE__{ref: ref}), do: Native.member_list_read_only(ref)
  def read_only?(other), do: raise_not_a_list(other)

  # A native result is a list, or `{delivery, position, acc}` when it is delivered in
  # chunks: the rest is asked for until it is whole.
  defp deliver(result) when is_list(result), do: result

  defp deliver({delivery, position, acc}),
    do: deliver(Native.member_list_continue(delivery, position, acc))

  defp validate_range!({first, last})
       when is_integer(first) and is_integer(last) and first >= 0 and last >= first do
    {min(first, @max_native_index), min(last, @max_native_index)}
  end

  defp validate_range!(range) do
    raise ArgumentError,
          "expected a range {first, last} of non-negative integers with first <= last, got: " <>
            GuildKit.Describe.describe(range)
  end

  defp raise_not_a_list(other) do
    raise ArgumentError,
          "expected a GuildKit.MemberList, got: #{GuildKit.Describe.describe(other)}"
  end

  defimpl Inspect do
    alias GuildKit.MemberList

    def inspect(list, _opts) do
      members = MemberList.member_count(list)
      rows = MemberList.size(list)
      extra = if MemberList.read_only?(list), do: ", read_only: true", else: ""
      "#GuildKit.MemberList<members: #{members}, rows: #{rows}#{extra}>"
    rescue
      # A handle that is not one (forged, of another kind, or from another node) must
      # still print, so that errors about it can be shown.
      ArgumentError -> "#GuildKit.MemberList<not a valid handle: #{Kernel.inspect(list.ref)}>"
    end
  end
end

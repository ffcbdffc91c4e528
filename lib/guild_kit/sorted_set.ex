defmodule GuildKit.SortedSet do
  @moduledoc """
  A mutable, NIF-backed ordered set of Erlang terms with rank queries.

  Built for member lists of a million entries: add, remove, the index of a member and
  the member at an index all take O(log n), and a read-only `snapshot/1` costs O(1)
  however large the set is. Measured costs are in `bench/RESULTS.md`.

      iex> set = GuildKit.SortedSet.new()
      iex> GuildKit.SortedSet.add(set, {1, "zed"})
      iex> GuildKit.SortedSet.add(set, {0, "amy"})
      iex> GuildKit.SortedSet.index_add(set, {1, "bob"})
      {1, set}
      iex> GuildKit.SortedSet.to_list(set)
      [{0, "amy"}, {1, "bob"}, {1, "zed"}]
      iex> GuildKit.SortedSet.at(set, 2)
      {1, "zed"}

  ## Mutable

  Unlike `MapSet`, a `GuildKit.SortedSet` is a handle to native memory: `add/2` and
  `remove/2` change the set in place and return the same handle for piping. Any process
  holding the handle sees the change. Use `snapshot/1` for a value that does not change.

  A set lives in the memory of the node that made it. Its handle can be sent to another
  node, but using it there raises `ArgumentError` (send `to_list/1` instead), and a
  copy there does not keep the set alive: the set is freed once no process of its own
  node holds it.

  ## Order and equality are Erlang's

  Terms are kept in Erlang term order, and `to_list/1` always equals
  `:gb_sets.to_list/1` after the same operations on a `:gb_sets` set. Terms that
  compare equal with `==` are one element, and the first one added is kept:

      iex> set = GuildKit.SortedSet.from_enumerable([1.0, 1, 2])
      iex> GuildKit.SortedSet.to_list(set)
      [1.0, 2]

  Integers and floats compare exactly (`2**53 + 1 > 2**53 * 1.0`), as in Erlang.

  ## Supported terms

  Integers of any size, floats, atoms, binaries (any bytes), tuples, proper lists and
  maps, nested to any depth. Pids, references, ports, funs, improper lists and
  bitstrings that are not whole bytes cannot be stored, nor can a term whose encoded
  key exceeds 16 MiB: about the bytes of its binaries and atoms (zero bytes count
  twice), plus a few per number and per element of a tuple, list or map.

  Only the functions that store a term raise `ArgumentError` for one that cannot be
  stored (`add/2`, `index_add/2`, `from_enumerable/2`, `from_proper_enumerable/2`),
  and the set is left unchanged. The lookups `member?/2`, `find_index/2`, `remove/2`
  and `index_remove/2` accept any term: one that a set cannot hold is simply absent
  (`false` or `nil`), and its size is checked before any of it is copied.

  ## Concurrency and scheduling

  A set can be used from any number of processes at once. Every change is applied
  whole under a lock that is held for O(log n) work at most, so readers never see a
  half-applied change.

  No call holds a normal scheduler for more than about a millisecond, whatever its
  input. Single-element operations run on the caller's scheduler; a call whose input
  is large (`from_enumerable/2` of a long list, a term with large binaries) moves
  itself to a dirty CPU scheduler. Results that grow with the set (`to_list/1`, large
  slices) are built from an O(1) snapshot in chunks of bounded size, each on a dirty
  CPU scheduler and prepended to the list so far: no call blocks a scheduler or a
  writer, and no result arrives in the caller's heap as one huge piece to merge. (A
  process whose heap has no room for a million-term list still pays the garbage
  collections that any list of that size costs it.)

  ## Memory

  Each member is stored once, as an order-preserving byte key, in a B+tree with packed
  leaves; `memory/1` reports the bytes held, and `bench/RESULTS.md` the bytes per
  member measured. Members longer than 512 bytes are stored out of line, so a write
  after a snapshot copies at most that much per member of the nodes it touches. The
  memory is freed when the last handle to the set (and its snapshots) is garbage
  collected; sets above a few thousand elements are freed on a background thread.

  ## Coming from sorted_set_nif

  The API follows Discord's `sorted_set_nif` (`Discord.SortedSet`), with these
  differences and their translations:

  | sorted_set_nif | GuildKit.SortedSet |
  |---|---|
  | the set is a bare reference: `is_reference(set)` | the set is a struct: `match?(%GuildKit.SortedSet{}, set)` |
  | `new()`, `new(capacity)`, `new(capacity, bucket_size)` | `new()`, `new(capacity: capacity)`; there are no buckets to size, and a bare integer raises |
  | `from_enumerable(terms, bucket_size)`, `from_proper_enumerable(terms, bucket_size)` | `from_enumerable(terms)`, `from_proper_enumerable(terms)` |
  | `{:error, :unsupported_type}` from `add/2`, `index_add/2` and the constructors | `ArgumentError` is raised and the set is unchanged: `rescue ArgumentError -> ...` where the error tuple was matched (the same exception also reports bad options, a value that is not a set and unsorted input to `from_proper_enumerable/1`; its message says which) |
  | `{:error, :unsupported_type}` from `remove/2`, `index_remove/2` and `find_index/2` | the term is absent: `remove/2` returns the set, `index_remove/2` `{nil, set}`, `find_index/2` `nil` |
  | no `member?/2` | `member?/2`, `false` for a term a set cannot hold |
  | `{:error, :bad_reference}`, `{:error, :lock_fail}` | `ArgumentError` for anything that is not a set; a lock cannot fail |
  | `from_proper_enumerable/2` trusts its input | `from_proper_enumerable/1` raises `ArgumentError` for input that is not strictly ascending |
  | floats are unsupported | floats are stored and compare with integers as in Erlang (`1 == 1.0` is one member) |
  | `debug(set)` | `inspect(set)` and `memory/1` |
  | `default_capacity/0`, `default_bucket_size/0` | none: nothing to size |
  | `jemalloc_allocation_info/0` | `memory/1` per set, `GuildKit.native_memory/0` for all NIF memory |

  Everything else (`size/1`, `to_list/1`, `at/3`, `slice/3`, and the results of the
  functions above for terms a set can hold) has the same arguments and results.
  """

  alias GuildKit.Native

  @enforce_keys [:ref]
  defstruct [:ref]

  @typedoc "A sorted set handle."
  @opaque t :: %__MODULE__{ref: reference()}

  @typedoc "Any term the set can store: see the moduledoc."
  @type element :: term()

  @max_native_index 0xFFFF_FFFF_FFFF_FFFF

  # A handle of this node: the NIF checks that it is a set's. One made on another node
  # is refused here, with a message that says so.
  defguardp is_local(ref) when is_reference(ref) and node(ref) == node()

  @doc """
  Returns an empty set.

  ## Options

    * `:capacity` - expected number of members, a non-negative integer (default `0`).
      Accepted for compatibility with `sorted_set_nif`; the tree allocates node by
      node, so the hint does not reserve memory up front.

  Unknown or invalid options raise `ArgumentError`.

  ## Examples

      iex> GuildKit.SortedSet.new() |> GuildKit.SortedSet.size()
      0
      iex> GuildKit.SortedSet.new(capacity: 1_000_000) |> GuildKit.SortedSet.size()
      0

  ## Performance

  O(1).
  """
  @spec new(keyword()) :: t()
  def new(opts \\ []) do
    validate_options!(opts)
    %__MODULE__{ref: Native.sorted_set_new()}
  end

  @doc """
  Returns a set of the terms of `enumerable`, sorted and de-duplicated.

  Among terms that compare equal the first one listed is kept. Takes the same options
  as `new/1`. Raises `ArgumentError` naming the position of the first unsupported term.

  ## Examples

      iex> GuildKit.SortedSet.from_enumerable([3, 1, 2, 1]) |> GuildKit.SortedSet.to_list()
      [1, 2, 3]

  ## Performance

  O(n log n): on the calling scheduler for short lists of small terms, else on a dirty
  CPU scheduler.
  """
  @spec from_enumerable(Enumerable.t(), keyword()) :: t()
  def from_enumerable(enumerable, opts \\ []) do
    validate_options!(opts)
    %__MODULE__{ref: Native.sorted_set_from_list(to_list!(enumerable), false)}
  end

  @doc """
  Returns a set of the terms of `enumerable`, which must already be in strictly
  ascending Erlang term order.

  Skips the sort of `from_enumerable/2`. Raises `ArgumentError` when a term is not
  greater than the one before it. Takes the same options as `new/1`.

  ## Examples

      iex> GuildKit.SortedSet.from_proper_enumerable([1, 2, 3]) |> GuildKit.SortedSet.size()
      3
      iex> GuildKit.SortedSet.from_proper_enumerable([1, 1.0])
      ** (ArgumentError) expected strictly ascending terms, but the term at position 1 is not greater than the one before it

  ## Performance

  O(n): on the calling scheduler for short lists of small terms, else on a dirty CPU
  scheduler.
  """
  @spec from_proper_enumerable(Enumerable.t(), keyword()) :: t()
  def from_proper_enumerable(enumerable, opts \\ []) do
    validate_options!(opts)
    %__MODULE__{ref: Native.sorted_set_from_list(to_list!(enumerable), true)}
  end

  @doc """
  Adds `term` to `set` unless an equal term is present, and returns `set`.

  ## Examples

      iex> set = GuildKit.SortedSet.new() |> GuildKit.SortedSet.add(:b) |> GuildKit.SortedSet.add(:a)
      iex> GuildKit.SortedSet.to_list(set)
      [:a, :b]

  ## Performance

  O(log n).
  """
  @spec add(t(), element()) :: t()
  def add(%__MODULE__{ref: ref} = set, term) when is_local(ref) do
    native_add(ref, term)
    set
  end

  def add(other, _term), do: raise_not_a_set(other)

  @doc """
  Adds `term` to `set` and returns `{index, set}`, where `index` is the position of the
  new term, or `{nil, set}` when an equal term was already present.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([10, 30])
      iex> GuildKit.SortedSet.index_add(set, 20)
      {1, set}
      iex> GuildKit.SortedSet.index_add(set, 20.0)
      {nil, set}

  ## Performance

  O(log n).
  """
  @spec index_add(t(), element()) :: {non_neg_integer() | nil, t()}
  def index_add(%__MODULE__{ref: ref} = set, term) when is_local(ref),
    do: {native_add(ref, term), set}

  def index_add(other, _term), do: raise_not_a_set(other)

  @doc """
  Removes the term equal to `term` from `set`, if present, and returns `set`.

  Accepts any term: one that a set cannot hold (a pid, a term over the size limit) is
  never present, so nothing is removed.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([1, 2, 3])
      iex> set |> GuildKit.SortedSet.remove(2.0) |> GuildKit.SortedSet.to_list()
      [1, 3]

  ## Performance

  O(log n).
  """
  @spec remove(t(), element()) :: t()
  def remove(%__MODULE__{ref: ref} = set, term) when is_local(ref) do
    native_remove(ref, term)
    set
  end

  def remove(other, _term), do: raise_not_a_set(other)

  @doc """
  Removes the term equal to `term` and returns `{index, set}`, where `index` is the
  position it had, or `{nil, set}` when it was absent. Accepts any term, as
  `remove/2` does.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([:a, :b, :c])
      iex> GuildKit.SortedSet.index_remove(set, :b)
      {1, set}
      iex> GuildKit.SortedSet.index_remove(set, :b)
      {nil, set}

  ## Performance

  O(log n).
  """
  @spec index_remove(t(), element()) :: {non_neg_integer() | nil, t()}
  def index_remove(%__MODULE__{ref: ref} = set, term) when is_local(ref),
    do: {native_remove(ref, term), set}

  def index_remove(other, _term), do: raise_not_a_set(other)

  @doc """
  Returns the number of terms in `set`.

  ## Examples

      iex> GuildKit.SortedSet.from_enumerable(1..5) |> GuildKit.SortedSet.size()
      5

  ## Performance

  O(1).
  """
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{ref: ref}) when is_local(ref), do: Native.sorted_set_size(ref)
  def size(other), do: raise_not_a_set(other)

  @doc """
  Returns true when `set` holds a term equal to `term`.

  Accepts any term: one that a set cannot hold is never a member (`false`, without
  copying it: its size is checked first).

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([1, 2])
      iex> GuildKit.SortedSet.member?(set, 2.0)
      true
      iex> GuildKit.SortedSet.member?(set, self())
      false

  ## Performance

  O(log n).
  """
  @spec member?(t(), term()) :: boolean()
  def member?(%__MODULE__{ref: ref}, term) when is_local(ref),
    do: native_find_index(ref, term) != nil

  def member?(other, _term), do: raise_not_a_set(other)

  @doc """
  Returns the index of the term equal to `term`, or `nil` when there is none.
  Accepts any term, as `member?/2` does.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([:a, :b, :c])
      iex> GuildKit.SortedSet.find_index(set, :c)
      2
      iex> GuildKit.SortedSet.find_index(set, :d)
      nil

  ## Performance

  O(log n).
  """
  @spec find_index(t(), term()) :: non_neg_integer() | nil
  def find_index(%__MODULE__{ref: ref}, term) when is_local(ref),
    do: native_find_index(ref, term)

  def find_index(other, _term), do: raise_not_a_set(other)

  @doc """
  Returns the term at `index` (zero-based), or `default` when `index` is past the end.

  Raises `ArgumentError` when `index` is not a non-negative integer.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([:a, :b])
      iex> GuildKit.SortedSet.at(set, 1)
      :b
      iex> GuildKit.SortedSet.at(set, 5, :none)
      :none

  ## Performance

  O(log n).
  """
  @spec at(t(), non_neg_integer(), default) :: element() | default when default: term()
  def at(set, index, default \\ nil)

  def at(%__MODULE__{ref: ref}, index, default)
      when is_local(ref) and is_integer(index) and index >= 0 do
    Native.sorted_set_at(ref, to_native_index(index), default)
  end

  def at(%__MODULE__{ref: ref}, index, _default) when is_local(ref) do
    raise ArgumentError,
          "expected index to be a non-negative integer, got: #{GuildKit.Describe.describe(index)}"
  end

  def at(other, _index, _default), do: raise_not_a_set(other)

  @doc """
  Returns up to `amount` terms starting at index `start`.

  Returns fewer terms (or `[]`) when the set ends first; a huge `amount` allocates
  nothing beyond what exists. Raises `ArgumentError` when `start` or `amount` is not a
  non-negative integer.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable(1..10)
      iex> GuildKit.SortedSet.slice(set, 2, 3)
      [3, 4, 5]
      iex> GuildKit.SortedSet.slice(set, 8, 2 ** 44)
      [9, 10]

  ## Performance

  O(log n + amount). A slice of up to 64 KiB of stored terms is read in one call on
  the calling scheduler; a larger one is built in chunks of 256 KiB on a dirty CPU
  scheduler, from an O(1) snapshot taken by the first chunk, so it reads one version
  of the set and never holds up a writer.
  """
  @spec slice(t(), non_neg_integer(), non_neg_integer()) :: [element()]
  def slice(%__MODULE__{ref: ref}, start, amount)
      when is_local(ref) and is_integer(start) and start >= 0 and is_integer(amount) and
             amount >= 0 do
    native_slice(ref, to_native_index(start), to_native_index(amount))
  end

  def slice(%__MODULE__{ref: ref}, start, amount) when is_local(ref) do
    raise ArgumentError,
          "expected start and amount to be non-negative integers, got: " <>
            "#{GuildKit.Describe.describe(start)} and #{GuildKit.Describe.describe(amount)}"
  end

  def slice(other, _start, _amount), do: raise_not_a_set(other)

  @doc """
  Returns all terms of `set` in order.

  ## Examples

      iex> GuildKit.SortedSet.from_enumerable(["b", "a"]) |> GuildKit.SortedSet.to_list()
      ["a", "b"]

  ## Performance

  O(n), built in chunks of bounded size from an O(1) snapshot (see `slice/3`): it never
  blocks a scheduler or a writer, and the caller's heap grows as it would building the
  list itself.
  """
  @spec to_list(t()) :: [element()]
  def to_list(%__MODULE__{ref: ref}) when is_local(ref),
    do: native_slice(ref, 0, @max_native_index)

  def to_list(other), do: raise_not_a_set(other)

  @doc """
  Returns a read-only set with the contents of `set` now.

  Later changes to `set` do not affect the snapshot, and changing the snapshot raises
  `ArgumentError`. The snapshot shares the tree's nodes with `set`; each side copies a
  node only when `set` next writes to it, so taking one is O(1) at any size. A snapshot
  of a snapshot is the snapshot itself.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([1, 2])
      iex> snapshot = GuildKit.SortedSet.snapshot(set)
      iex> GuildKit.SortedSet.add(set, 3)
      iex> {GuildKit.SortedSet.to_list(snapshot), GuildKit.SortedSet.to_list(set)}
      {[1, 2], [1, 2, 3]}
      iex> GuildKit.SortedSet.add(snapshot, 4)
      ** (ArgumentError) this GuildKit.SortedSet is a read-only snapshot and cannot be changed

  ## Performance

  O(1). The first write to `set` after a snapshot copies the O(log n) nodes on its path,
  each at most 64.5 KiB however large the members are.
  """
  @spec snapshot(t()) :: t()
  def snapshot(%__MODULE__{ref: ref}) when is_local(ref),
    do: %__MODULE__{ref: Native.sorted_set_snapshot(ref)}

  def snapshot(other), do: raise_not_a_set(other)

  @doc """
  Returns the contents of `set` as one binary, which `from_binary/1` turns back into
  an equal set: on another node, in another process, or after a file round trip.

  The binary is a self-describing, versioned format (a magic header, the format
  version, the kind of structure, counts and a CRC-32 checksum, then the members as
  the byte keys the set already holds), so it can be stored, sent to another node or
  wrapped in `:erlang.term_to_binary/1` as any binary can. It is read by a node of
  this release or a later one, of any architecture: its integers have a fixed byte
  order, and its members are not Erlang's external term format but GuildKit's own
  term keys.

  The dump is written from an O(1) snapshot of `set`, so writers are never held up
  and the binary holds the set as it was at the call. It is one refcounted binary,
  outside the caller's heap.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([{2, "bob"}, {1, "amy"}])
      iex> binary = GuildKit.SortedSet.to_binary(set)
      iex> binary |> GuildKit.SortedSet.from_binary() |> GuildKit.SortedSet.to_list()
      [{1, "amy"}, {2, "bob"}]

  ## Performance

  O(n) in the bytes of the members, with no term built: about the size of the members'
  keys plus one or two bytes each. Dumps of more than 64 KiB are written on a dirty CPU
  scheduler.
  """
  @spec to_binary(t()) :: binary()
  def to_binary(%__MODULE__{ref: ref}) when is_local(ref), do: Native.sorted_set_to_binary(ref)
  def to_binary(other), do: raise_not_a_set(other)

  @doc """
  Returns a new set with the contents of a dump made by `to_binary/1`.

  The result is an ordinary, writable set: it shares nothing with the set that was
  dumped, and `to_list/1`, `size/1`, `at/3` and `find_index/2` give the same answers as
  they did on it when it was dumped.

  Raises `ArgumentError`, and builds nothing, for any binary that is not a whole,
  intact dump of a set: one that is truncated or has bytes appended, whose checksum
  does not match (corrupted), that is not a dump at all or is a dump of another
  structure (foreign), or that was written in a later format version. Every member is
  validated too (a well-formed key, in strictly ascending order), so even a dump
  forged with a matching checksum cannot build an invalid set.

  ## Examples

      iex> set = GuildKit.SortedSet.from_enumerable([:a, :b])
      iex> copy = GuildKit.SortedSet.from_binary(GuildKit.SortedSet.to_binary(set))
      iex> GuildKit.SortedSet.add(copy, :c) |> GuildKit.SortedSet.to_list()
      [:a, :b, :c]
      iex> GuildKit.SortedSet.to_list(set)
      [:a, :b]
      iex> GuildKit.SortedSet.from_binary("hello")
      ** (ArgumentError) cannot load a GuildKit.SortedSet from this binary: not a GuildKit dump (its first bytes are not the dump magic)

  ## Performance

  O(n) in the bytes of the dump: the members are checked and copied into a tree
  built bottom-up, without sorting or decoding a term. Dumps of more than 64 KiB are
  loaded on a dirty CPU scheduler.
  """
  @spec from_binary(binary()) :: t()
  def from_binary(binary) when is_binary(binary),
    do: %__MODULE__{ref: Native.sorted_set_from_binary(binary)}

  def from_binary(other),
    do: GuildKit.Describe.raise_not_a_dump(other, "GuildKit.SortedSet.to_binary/1")

  @doc """
  Returns the bytes of native memory held by `set`.

  Nodes shared with snapshots are counted in full for each set that shares them.

  ## Examples

      iex> GuildKit.SortedSet.from_enumerable(1..1000) |> GuildKit.SortedSet.memory() > 0
      true

  ## Performance

  O(n / 128) node visits; on a dirty CPU scheduler for sets of more than 65,536 members.
  """
  @spec memory(t()) :: non_neg_integer()
  def memory(%__MODULE__{ref: ref}) when is_local(ref), do: Native.sorted_set_memory(ref)
  def memory(other), do: raise_not_a_set(other)

  @doc """
  Whether `set` is a read-only snapshot (see `snapshot/1`), which raises
  `ArgumentError` on every change.

  ## Examples

      iex> set = GuildKit.SortedSet.new()
      iex> {GuildKit.SortedSet.read_only?(set), GuildKit.SortedSet.read_only?(GuildKit.SortedSet.snapshot(set))}
      {false, true}

  ## Performance

  O(1).
  """
  @spec read_only?(t()) :: boolean()
  def read_only?(%__MODULE__{ref: ref}) when is_local(ref), do: Native.sorted_set_read_only(ref)
  def read_only?(other), do: raise_not_a_set(other)

  # Indexes past 2^64 - 1 mean the same as it (past the end): the NIF takes a u64.
  # Small integers are compared first, as comparing with the bignum limit is slower.
  defp to_native_index(index) when index <= 0x7FF_FFFF_FFFF_FFFF, do: index
  defp to_native_index(index), do: min(index, @max_native_index)

  defp native_add(ref, term) do
    Native.sorted_set_add(ref, term)
  end

  defp native_remove(ref, term) do
    Native.sorted_set_remove(ref, term)
  end

  defp native_find_index(ref, term) do
    Native.sorted_set_find_index(ref, term)
  end

  # A range larger than one NIF call should build comes back as its last chunk, with a
  # snapshot to build the chunks before it from: each is prepended to the list so far,
  # so the list is never copied and every chunk reads the same version of the set.
  defp native_slice(ref, start, amount) do
    case Native.sorted_set_slice(ref, start, amount) do
      list when is_list(list) -> list
      {snapshot, stop, list} -> prepend_chunks(snapshot, start, stop, list)
    end
  end

  defp prepend_chunks(_snapshot, start, start, list), do: list

  defp prepend_chunks(snapshot, start, stop, list) do
    {stop, list} = Native.sorted_set_slice_rest(snapshot, start, stop, list)
    prepend_chunks(snapshot, start, stop, list)
  end

  defp validate_options!(opts) do
    opts = GuildKit.Describe.options!(opts, capacity: 0)

    case opts[:capacity] do
      capacity when is_integer(capacity) and capacity >= 0 ->
        :ok

      capacity ->
        raise ArgumentError,
              "expected :capacity to be a non-negative integer, got: #{GuildKit.Describe.describe(capacity)}"
    end
  end

  defp to_list!(enumerable) when is_list(enumerable), do: enumerable

  defp to_list!(enumerable) do
    Enum.to_list(enumerable)
  rescue
    # Includes values with an Enumerable implementation that refuses them (a fun of
    # the wrong arity), not only values without one.
    Protocol.UndefinedError ->
      reraise ArgumentError,
              [message: "expected an enumerable, got: #{GuildKit.Describe.describe(enumerable)}"],
              __STACKTRACE__
  end

  defp raise_not_a_set(%__MODULE__{ref: ref}) when is_reference(ref) do
    raise ArgumentError,
          "expected a GuildKit.SortedSet of this node (#{GuildKit.Describe.describe(node())}), got one made on " <>
            "#{GuildKit.Describe.describe(node(ref))}: a set lives in the memory of the node that made it " <>
            "and can only be used there"
  end

  defp raise_not_a_set(%__MODULE__{} = set) do
    raise ArgumentError,
          "expected a GuildKit.SortedSet, got a struct whose handle is not one: " <>
            GuildKit.Describe.describe(set, structs: false)
  end

  defp raise_not_a_set(other) do
    raise ArgumentError,
          "expected a GuildKit.SortedSet, got: #{GuildKit.Describe.describe(other)}"
  end

  defimpl Enumerable do
    alias GuildKit.SortedSet

    # Reads in chunks that start small, so Enum.take(set, 10) decodes 16 members, and
    # grow to amortise the NIF call on full traversals. The traversal reads a snapshot,
    # so it sees one consistent version of the set.
    @first_chunk 16
    @max_chunk 256

    def count(set), do: {:ok, SortedSet.size(set)}

    def member?(set, term), do: {:ok, SortedSet.member?(set, term)}

    def slice(set) do
      snapshot = SortedSet.snapshot(set)

      slicing_fun = fn
        start, amount, 1 ->
          SortedSet.slice(snapshot, start, amount)

        start, amount, step ->
          snapshot
          |> SortedSet.slice(start, (amount - 1) * step + 1)
          |> Enum.take_every(step)
      end

      {:ok, SortedSet.size(snapshot), slicing_fun}
    end

    def reduce(set, acc, fun) do
      reduce(SortedSet.snapshot(set), 0, @first_chunk, [], acc, fun)
    end

    defp reduce(_snapshot, _next, _chunk, _buffer, {:halt, acc}, _fun), do: {:halted, acc}

    defp reduce(snapshot, next, chunk, buffer, {:suspend, acc}, fun) do
      {:suspended, acc, &reduce(snapshot, next, chunk, buffer, &1, fun)}
    end

    defp reduce(snapshot, next, chunk, [term | rest], {:cont, acc}, fun) do
      reduce(snapshot, next, chunk, rest, fun.(term, acc), fun)
    end

    defp reduce(snapshot, next, chunk, [], {:cont, acc}, fun) do
      case SortedSet.slice(snapshot, next, chunk) do
        [] ->
          {:done, acc}

        terms ->
          next_chunk = min(chunk * 2, @max_chunk)
          reduce(snapshot, next + length(terms), next_chunk, terms, {:cont, acc}, fun)
      end
    end
  end

  defimpl Collectable do
    alias GuildKit.SortedSet

    def into(set) do
      collector = fn
        set, {:cont, term} -> SortedSet.add(set, term)
        set, :done -> set
        _set, :halt -> :ok
      end

      {set, collector}
    end
  end

  defimpl Inspect do
    import Inspect.Algebra
    alias GuildKit.{Describe, Native}

    def inspect(set, _opts) do
      concat(["#GuildKit.SortedSet<", describe(set), ">"])
    end

    # Never raises, whatever the handle: errors about a bad one must still print.
    defp describe(%{ref: ref}) when is_reference(ref) and node(ref) == node() do
      size = Native.sorted_set_size(ref)
      extra = if Native.sorted_set_read_only(ref), do: ", read_only: true", else: ""
      "size: #{size}#{extra}"
    rescue
      ArgumentError -> "invalid handle: #{Describe.describe(ref)}"
    end

    defp describe(%{ref: ref}) when is_reference(ref),
      do: "made on node #{Describe.describe(node(ref))}, not usable here"

    defp describe(set), do: "invalid handle: #{Describe.describe(Map.get(set, :ref))}"
  end
end

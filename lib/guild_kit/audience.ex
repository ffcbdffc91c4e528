defmodule GuildKit.Audience do
  @moduledoc """
  The sessions of one relay, and which of them get each event, computed in Rust.

  An audience holds up to 65,536 sessions (`max_sessions/0`). Each has a pid (of this
  node or another), a member id, role ids, an active flag and the member-list windows
  it watches (`{first, last}`, as in `GuildKit.MemberList`). `select/4` returns the pids
  an event goes to, checking every session's permissions against a
  `GuildKit.Permissions`; once its answer is cached, a select is O(n / 64) word
  operations plus the pids it returns.

      iex> alias GuildKit.{Audience, Permissions}
      iex> perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:mods, [{:everyone, 0, 0x400}, {:role, :mod, 0x400, 0}])
      iex> perms = Permissions.put_role(perms, :mod, 0)
      iex> audience = Audience.new()
      iex> ann = spawn(fn -> :ok end)
      iex> bob = spawn(fn -> :ok end)
      iex> Audience.add(audience, ann, :ann, [:mod])
      :ok
      iex> Audience.add(audience, bob, :bob, [], active: false)
      :ok
      iex> Audience.select(audience, perms, {:channel, :mods}) == [ann]
      true
      iex> Audience.select(audience, perms, :all, sessions: :all) == [ann, bob]
      true

  ## Selecting

  `select(audience, permissions, filter, opts)` takes one of these filters:

    * `:all` - every considered session;
    * `{:channel, channel_id}` - sessions whose member has `VIEW_CHANNEL` (`0x400`) in
      the channel;
    * `{:channel, channel_id, required_bits}` - sessions whose member has all of
      `required_bits` there;
    * `{:window, window}` - sessions watching the window.

  By default only active sessions are considered, plus the passive sessions of the
  members listed in `force:` (mentions), which pass the same filter: a mentioned member
  that may not see the channel gets nothing. `sessions: :passive` considers only the
  passive sessions, `sessions: :all` every session. A channel the permissions do not
  know raises `ArgumentError`, as `GuildKit.Permissions.compute/4` does.

  Pids come in slot order: a session takes a free slot when added and keeps it until
  removed, so the order is the same from one select to the next, and a filter's result
  is a subsequence of `:all`'s.

  ## The cache, and what it costs

  For each `(channel, required bits)` asked about, the audience keeps a bitmap of the
  sessions whose member may see it, with what it was computed from: the stamps of the
  permissions' base part and of the channel (see `GuildKit.Permissions`), and the
  session changes it has seen. So a cached answer is never stale, and is recomputed
  only when what it depends on changed:

    * adding or removing a session, or changing its roles, is remembered; the next
      select of each channel recomputes just those sessions, O(roles each);
    * a channel's overwrites changing recomputes that channel's answer once, in
      O(sessions + distinct role sets); other channels keep theirs;
    * a role's bits changing (or the owner) recomputes only the sessions holding that
      role (or the owner's), or every answer when many sessions hold it, as does a
      change to `@everyone`;
    * activity and windows are not part of the cache: changing them costs nothing
      there.

  Sessions with the same roles share one interned role set, whose permissions are
  worked out once. At most 1,024 `(channel, required bits)` answers are kept (the least
  recently used one makes room), each a bit per session; and the sessions of an
  audience hold at most 65,536 distinct role ids at once.

  | operation | time |
  |---|---|
  | `add/5`, `update/3` with roles or windows | O(roles + windows × log n) |
  | `update/3` with only `active:`, `member?/2`, `size/1` | O(1) |
  | `update_member/3` | O(roles + sessions of the member) |
  | `remove/2` | O(roles + windows × log n + sessions of the member) |
  | `select/4`, `count/4`, cached | O(n / 64 + sessions returned + forced members) |
  | the first `select/4` after a change | plus the recompute above |

  A select starts on the caller's normal scheduler and estimates its work and the
  bytes of the list it returns; when either would take more than a fraction of a
  millisecond (a recompute over tens of thousands of sessions, a list of several tens
  of thousands of pids, many remote pids) it moves to a dirty CPU scheduler. A list is
  at most 65,536 pids, about 1 MB (3.5 MB if all are remote), so even the largest
  result costs the caller only a short pause when it joins its heap.

  ## For a relay

  A relay keeps one audience and one `GuildKit.Permissions`:

    * an event: `select(audience, perms, {:channel, channel_id}, force: mentions)`;
    * member-list ops: `select(audience, perms, {:window, window})` for each window in
      `GuildKit.MemberList`'s changes;
    * passive updates: `select_groups(audience, perms, %{channel_id => last_seq})`
      groups the passive sessions by the channels they may see, with the map each
      group should get, computed in one native call (and returned in bounded chunks);
    * role changes: `update_member(audience, member_id, role_ids)`; new permissions:
      just pass the new value to the next select; activity: `update(audience, pid,
      active: flag, watch: windows)`; exits: `remove(audience, pid)`;
    * `count/4` answers how many sessions a select would return without building the
      list.

  An audience is a mutable handle to native memory, safe to use from any process (one
  lock per audience); a relay uses it from its own process only. `memory/1` is its
  native memory.
  """

  alias GuildKit.{Native, Permissions}
  alias GuildKit.Audience.Check

  @enforce_keys [:ref]
  defstruct [:ref]

  @typedoc "An audience handle."
  @opaque t :: %__MODULE__{ref: reference()}

  @typedoc "A watched member-list window: first and last row, inclusive."
  @type window :: {non_neg_integer(), non_neg_integer()}

  @typedoc "What an event requires of a session."
  @type filter ::
          :all
          | {:channel, term()}
          | {:channel, term(), Permissions.bits()}
          | {:window, window()}

  @max_u64 0xFFFF_FFFF_FFFF_FFFF
  @view_channel 0x400

  @doc """
  Returns an empty audience.

  ## Examples

      iex> GuildKit.Audience.new() |> GuildKit.Audience.size()
      0

  ## Performance

  O(1).
  """
  @spec new() :: t()
  def new, do: %__MODULE__{ref: Native.audience_new()}

  @doc """
  The most sessions an audience holds.

      iex> GuildKit.Audience.max_sessions()
      65536
  """
  @spec max_sessions() :: pos_integer()
  def max_sessions, do: Native.audience_max_sessions()

  @doc """
  Adds the session `pid` of `member_id`, holding `role_ids` (duplicates count once).
  Raises `ArgumentError` when the pid is already in the audience or the audience is
  full.

  ## Options

    * `:active` - whether the session gets per-event traffic (default `true`);
    * `:watch` - the windows it watches (default `[]`).

  ## Examples

      iex> audience = GuildKit.Audience.new()
      iex> GuildKit.Audience.add(audience, self(), 42, [:mods], active: false, watch: [{0, 99}])
      :ok
      iex> GuildKit.Audience.member?(audience, self())
      true

  ## Performance

  O(roles + windows × log n), amortized.
  """
  @spec add(t(), pid(), term(), [term()], keyword()) :: :ok
  def add(audience, pid, member_id, role_ids, opts \\ [])

  def add(%__MODULE__{ref: ref}, pid, member_id, role_ids, opts) do
    validate_pid!(pid)
    Check.role_ids!(role_ids)
    opts = validate_opts!(opts, active: true, watch: [])
    active = validate_active!(opts[:active])
    watch = Check.windows!(opts[:watch])
    Native.audience_add(ref, pid, member_id, role_ids, active, watch)
  end

  def add(other, _pid, _member_id, _role_ids, _opts), do: raise_not_an_audience(other)

  @doc """
  Changes a session: each option given replaces what the session had. Raises
  `ArgumentError` when the pid is not in the audience.

  ## Options

    * `:roles` - its role ids;
    * `:active` - whether it is active;
    * `:watch` - the windows it watches.

  ## Examples

      iex> audience = GuildKit.Audience.new()
      iex> GuildKit.Audience.add(audience, self(), 42, [])
      iex> GuildKit.Audience.update(audience, self(), roles: [:mods], active: false)
      :ok
      iex> [%{role_ids: [:mods], active: false}] = GuildKit.Audience.to_list(audience)

  ## Performance

  O(roles + windows × log n), amortized; O(1) for `:active` alone.
  """
  @spec update(t(), pid(), keyword()) :: :ok
  def update(%__MODULE__{ref: ref}, pid, opts) do
    validate_pid!(pid)
    opts = validate_opts!(opts, roles: nil, active: nil, watch: nil)
    roles = opts[:roles]
    if roles != nil, do: Check.role_ids!(roles)
    active = if opts[:active] == nil, do: nil, else: validate_active!(opts[:active])
    watch = if opts[:watch] == nil, do: nil, else: Check.windows!(opts[:watch])
    Native.audience_update(ref, pid, roles, active, watch)
  end

  def update(other, _pid, _opts), do: raise_not_an_audience(other)

  @doc """
  Gives every session of `member_id` these role ids. Returns how many sessions it has
  here (`0` when none).

  ## Examples

      iex> audience = GuildKit.Audience.new()
      iex> GuildKit.Audience.add(audience, self(), 42, [])
      iex> GuildKit.Audience.update_member(audience, 42, [:mods])
      1
      iex> GuildKit.Audience.update_member(audience, 7, [:mods])
      0

  ## Performance

  O(roles + sessions of the member), amortized.
  """
  @spec update_member(t(), term(), [term()]) :: non_neg_integer()
  def update_member(%__MODULE__{ref: ref}, member_id, role_ids) do
    Check.role_ids!(role_ids)
    Native.audience_update_member(ref, member_id, role_ids)
  end

  def update_member(other, _member_id, _role_ids), do: raise_not_an_audience(other)

  @doc """
  Removes the session `pid`; nothing happens when it is not in the audience.

  ## Examples

      iex> audience = GuildKit.Audience.new()
      iex> GuildKit.Audience.add(audience, self(), 42, [])
      iex> GuildKit.Audience.remove(audience, self())
      :ok
      iex> GuildKit.Audience.size(audience)
      0

  ## Performance

  O(roles + windows × log n + sessions of the member), amortized.
  """
  @spec remove(t(), pid()) :: :ok
  def remove(%__MODULE__{ref: ref}, pid) do
    validate_pid!(pid)
    Native.audience_remove(ref, pid)
    :ok
  end

  def remove(other, _pid), do: raise_not_an_audience(other)

  @doc """
  Returns whether `pid` is a session of the audience.

  ## Examples

      iex> GuildKit.Audience.new() |> GuildKit.Audience.member?(self())
      false

  ## Performance

  O(1).
  """
  @spec member?(t(), pid()) :: boolean()
  def member?(%__MODULE__{ref: ref}, pid) do
    validate_pid!(pid)
    Native.audience_member(ref, pid)
  end

  def member?(other, _pid), do: raise_not_an_audience(other)

  @doc """
  Returns the number of sessions.

  ## Examples

      iex> GuildKit.Audience.new() |> GuildKit.Audience.size()
      0

  ## Performance

  O(1).
  """
  @spec size(t()) :: non_neg_integer()
  def size(%__MODULE__{ref: ref}), do: Native.audience_size(ref)
  def size(other), do: raise_not_an_audience(other)

  @doc """
  Returns the pids of the sessions an event with `filter` goes to, in slot order (see
  the module docs for filters, the cache and costs).

  ## Options

    * `:force` - member ids (mentions) whose passive sessions are considered too, when
      `:sessions` is `:active`; they get the event only if they pass the filter
      (default `[]`);
    * `:sessions` - `:active` (default), `:passive` or `:all`.

  ## Examples

      iex> alias GuildKit.{Audience, Permissions}
      iex> perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:general, [])
      iex> audience = Audience.new()
      iex> Audience.add(audience, self(), :ann, [], active: false)
      iex> Audience.select(audience, perms, {:channel, :general})
      []
      iex> Audience.select(audience, perms, {:channel, :general}, force: [:ann]) == [self()]
      true
      iex> Audience.select(audience, perms, {:channel, :general, 0x800}, force: [:ann])
      []

  ## Performance

  O(n / 64 + pids returned + forced members) once cached; see the module docs for what
  a change costs the next select.
  """
  @spec select(t(), Permissions.t(), filter(), keyword()) :: [pid()]
  def select(audience, permissions, filter, opts \\ [])

  def select(audience, permissions, filter, opts),
    do: run_select(audience, permissions, filter, opts, :pids)

  @doc """
  Returns how many pids `select/4` would return, without building the list.

  ## Examples

      iex> alias GuildKit.{Audience, Permissions}
      iex> audience = Audience.new()
      iex> Audience.add(audience, self(), :ann, [], active: false)
      iex> Audience.count(audience, Permissions.new(), :all, sessions: :passive)
      1

  ## Performance

  As `select/4`, without the list: O(n / 64) once cached.
  """
  @spec count(t(), Permissions.t(), filter(), keyword()) :: non_neg_integer()
  def count(audience, permissions, filter, opts \\ [])

  def count(audience, permissions, filter, opts),
    do: run_select(audience, permissions, filter, opts, :count)

  defp run_select(%__MODULE__{ref: ref}, permissions, filter, opts, what) do
    {force, sessions} = select_opts!(opts)
    native = Permissions.native(permissions)
    Native.audience_select(ref, native, normalize_filter!(filter), force, sessions, what)
  end

  defp run_select(other, _permissions, _filter, _opts, _what), do: raise_not_an_audience(other)

  @doc """
  Groups sessions by the channels of `channels` they may see: the building block of
  passive updates. `channels` maps channel ids to any values (a relay's latest seq per
  channel). Returns `[{%{channel_id => value}, [pid]}]`: one entry for each distinct
  set of channels that some sessions may see, with the part of `channels` they may see
  and their pids. Sessions that may see none of the channels are left out, and so is
  everything when `channels` is empty. Groups come in the slot order of their first
  session, pids in slot order.

  ## Options

    * `:sessions` - `:passive` (default: passive updates are for passive sessions),
      `:active` or `:all`;
    * `:required` - the bits a session's member needs in a channel (default
      `VIEW_CHANNEL`, `0x400`);
    * `:slice` - `{index, count}`, `count` a power of two up to 64: only the sessions
      of the members whose id hashes to `index` modulo `count` (default `{0, 1}`, every
      session). The `count` slices of one count split the sessions into disjoint parts,
      and a member's sessions are in the same part for as long as the audience lives,
      whether they leave and come back or not. A relay spreads its passive updates so.

  ## Examples

      iex> alias GuildKit.{Audience, Permissions}
      iex> perms =
      ...>   Permissions.new(everyone: 0x400, roles: %{mod: 0})
      ...>   |> Permissions.put_channel(:general, [])
      ...>   |> Permissions.put_channel(:mods, [{:everyone, 0, 0x400}, {:role, :mod, 0x400, 0}])
      iex> audience = Audience.new()
      iex> Audience.add(audience, self(), :ann, [:mod], active: false)
      iex> [{%{general: 7, mods: 9}, [pid]}] = Audience.select_groups(audience, perms, %{general: 7, mods: 9})
      iex> pid == self()
      true
      iex> halves = for i <- [0, 1], do: Audience.select_groups(audience, perms, %{general: 7}, slice: {i, 2})
      iex> Enum.sort(halves) == [[], [{%{general: 7}, [self()]}]]
      true

  The groups are computed in one call (on a dirty CPU scheduler when that is big) and
  returned in chunks of a fraction of a megabyte, so that a huge result (every session
  seeing a different set of channels) never costs the caller a long pause.

  ## Performance

  O(channels × n / 64 + n × channels / 64 + the result), plus each channel's cache
  update as in `select/4`; a slice of `count` does 1/`count` of the per-session work.
  """
  @spec select_groups(t(), Permissions.t(), %{term() => term()}, keyword()) ::
          [{%{term() => term()}, [pid()]}]
  def select_groups(audience, permissions, channels, opts \\ [])

  def select_groups(%__MODULE__{ref: ref}, permissions, channels, opts) when is_map(channels) do
    opts = validate_opts!(opts, sessions: :passive, required: @view_channel, slice: {0, 1})
    sessions = validate_sessions!(opts[:sessions])
    required = validate_bits!(opts[:required])
    slice = validate_slice!(opts[:slice])
    channels = Map.to_list(channels)
    native = Permissions.native(permissions)

    # A group too big for one chunk continues in the next as {:more, pids}.
    Native.audience_select_groups(ref, native, channels, required, sessions, slice)
    |> chunks(&Native.audience_groups_next(&1, channels))
    |> GuildKit.Chunks.join()
  end

  def select_groups(%__MODULE__{}, _permissions, channels, _opts) do
    raise ArgumentError,
          "expected channels to be a map of channel_id => value, got: #{GuildKit.Describe.describe(channels)}"
  end

  def select_groups(other, _permissions, _channels, _opts), do: raise_not_an_audience(other)

  @doc """
  Returns every session as a map with `:pid`, `:member_id`, `:role_ids` (deduplicated,
  in term order), `:active` and `:watch` (sorted), in slot order.

  ## Examples

      iex> audience = GuildKit.Audience.new()
      iex> GuildKit.Audience.add(audience, self(), 42, [:b, :a, :b], watch: [{0, 99}])
      iex> [%{member_id: 42, role_ids: [:a, :b], active: true, watch: [{0, 99}]}] =
      ...>   GuildKit.Audience.to_list(audience)

  The list is built in chunks of a fraction of a megabyte, each in one call: it is a
  consistent snapshot only if the audience does not change meanwhile.

  ## Performance

  O(n), in bounded chunks on the caller's scheduler.
  """
  @spec to_list(t()) :: [
          %{
            pid: pid(),
            member_id: term(),
            role_ids: [term()],
            active: boolean(),
            watch: [window()]
          }
        ]
  def to_list(%__MODULE__{ref: ref}) do
    Native.audience_to_list(ref, 0)
    |> chunks(&Native.audience_to_list(ref, &1))
    |> Enum.concat()
  end

  def to_list(other), do: raise_not_an_audience(other)

  # Big results come in chunks, so that no call builds (and no heap takes in) more than
  # a fraction of a megabyte at once: `{chunk, nil}` ends a result, `{chunk, next}` says
  # that `more.(next)` returns the rest. The chunks, in order.
  defp chunks(first, more, chunks \\ [])
  defp chunks({chunk, nil}, _more, chunks), do: Enum.reverse([chunk | chunks])
  defp chunks({chunk, next}, more, chunks), do: chunks(more.(next), more, [chunk | chunks])

  @doc """
  Returns the bytes of native memory held by the audience, caches included.

  ## Examples

      iex> GuildKit.Audience.new() |> GuildKit.Audience.memory() > 0
      true

  ## Performance

  O(cache entries + windows + roles).
  """
  @spec memory(t()) :: non_neg_integer()
  def memory(%__MODULE__{ref: ref}), do: Native.audience_memory(ref)
  def memory(other), do: raise_not_an_audience(other)

  defp select_opts!([]), do: {[], :active}
  defp select_opts!(force: force) when is_list(force), do: {force, :active}

  defp select_opts!(opts) do
    opts = validate_opts!(opts, force: [], sessions: :active)

    force =
      case opts[:force] do
        force when is_list(force) ->
          force

        other ->
          raise ArgumentError,
                "expected :force to be a list of member ids, got: #{GuildKit.Describe.describe(other)}"
      end

    {force, validate_sessions!(opts[:sessions])}
  end

  defp validate_opts!(opts, defaults) do
    GuildKit.Describe.options!(opts, defaults)
  end

  defp validate_sessions!(sessions) when sessions in [:active, :passive, :all], do: sessions

  defp validate_sessions!(other) do
    raise ArgumentError,
          "expected :sessions to be :active, :passive or :all, got: #{GuildKit.Describe.describe(other)}"
  end

  @slice_counts for log2 <- 0..6, do: Bitwise.bsl(1, log2)

  defp validate_slice!({index, count} = slice)
       when count in @slice_counts and is_integer(index) and index >= 0 and index < count,
       do: slice

  defp validate_slice!(other) do
    raise ArgumentError,
          "expected :slice to be {index, count} with count a power of two up to 64 and " <>
            "index in 0..count-1, got: #{GuildKit.Describe.describe(other)}"
  end

  defp normalize_filter!(:all), do: :all
  defp normalize_filter!({:channel, channel_id}), do: {:channel, channel_id, @view_channel}

  defp normalize_filter!({:channel, _channel_id, bits} = filter)
       when is_integer(bits) and bits >= 0 and bits <= @max_u64,
       do: filter

  defp normalize_filter!({:window, window}) do
    {first, last} = Check.window!(window)
    {:window, first, last}
  end

  defp normalize_filter!(other) do
    raise ArgumentError,
          "expected a filter :all, {:channel, channel_id}, {:channel, channel_id, required_bits} " <>
            "(bits an integer in 0..2^64-1) or {:window, {first, last}}, got: #{GuildKit.Describe.describe(other)}"
  end

  defp validate_bits!(bits) when is_integer(bits) and bits >= 0 and bits <= @max_u64, do: bits

  defp validate_bits!(other) do
    raise ArgumentError,
          "expected :required to be an integer in 0..2^64-1, got: #{GuildKit.Describe.describe(other)}"
  end

  defp validate_pid!(pid) when is_pid(pid), do: :ok

  defp validate_pid!(other),
    do: raise(ArgumentError, "expected a pid, got: #{GuildKit.Describe.describe(other)}")

  defp validate_active!(active) when is_boolean(active), do: active

  defp validate_active!(other) do
    raise ArgumentError,
          "expected :active to be a boolean, got: #{GuildKit.Describe.describe(other)}"
  end

  defp raise_not_an_audience(other) do
    raise ArgumentError, "expected a GuildKit.Audience, got: #{GuildKit.Describe.describe(other)}"
  end

  defimpl Inspect do
    def inspect(audience, _opts) do
      "#GuildKit.Audience<sessions: #{GuildKit.Audience.size(audience)}>"
    end
  end
end

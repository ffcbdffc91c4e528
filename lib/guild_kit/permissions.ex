defmodule GuildKit.Permissions do
  @moduledoc """
  Discord's permission model, computed in Rust: the `@everyone` role, the guild's roles,
  the owner, and each channel's permission overwrites.

      iex> alias GuildKit.Permissions
      iex> perms =
      ...>   Permissions.new(everyone: 0x400, roles: %{mods: 0x2000})
      ...>   |> Permissions.put_channel(:staff, [{:everyone, 0, 0x400}, {:role, :mods, 0x400, 0}])
      iex> Permissions.compute(perms, :ann, [], :staff)
      0
      iex> Permissions.compute(perms, :bob, [:mods], :staff)
      0x2400

  Permissions are non-negative integers below 2^64, one bit per permission as Discord
  numbers them: `VIEW_CHANNEL` is `0x400` (`view_channel/0`), `ADMINISTRATOR` is `0x8`
  (`administrator/0`).

  ## The algorithm

  This is the algorithm of Discord's developer documentation ("Permissions": the
  permission hierarchy and permission overwrites).

  Base permissions, `compute/3`, for a member holding `role_ids`:

    1. the guild owner has every permission (all 64 bits, `all/0`);
    2. otherwise the base is the `@everyone` bits OR the bits of each of the member's
       roles. Role ids the model does not know are ignored, as Discord ignores deleted
       roles;
    3. a base with `ADMINISTRATOR` becomes every permission.

  Permissions in a channel, `compute/4`, starting from the base:

    1. a base of every permission (the owner, administrators) is the answer: no
       overwrite applies to them;
    2. the `@everyone` overwrite: `perms &&& ~~~deny ||| allow`;
    3. the overwrites of the member's roles, all at once: the union of their denies is
       taken away, then the union of their allows added (so one role's allow beats
       another's deny). Overwrites of roles the model does not know do not apply;
    4. the member's own overwrite, the same way.

  A channel given several overwrites for one target (two `{:everyone, ...}`, or two for
  one role or one member) merges them into one whose allow and deny are the unions of
  theirs, so the order of a channel's overwrites never matters.

  ## Ids

  Role ids, member ids and channel ids are any terms `GuildKit.SortedSet` can store
  (not pids, ports, references or funs), compared as map keys are: `1` and `1.0` are
  different ids. An id that cannot be stored raises where it would be stored (a role,
  the owner, a channel, an overwrite) and names nothing where it is looked up.

  ## Values

  A `Permissions` is an immutable value: every change returns a new one and leaves the
  one it was given exactly as it was, so a value kept after a change, or sent to another
  process on the same node, never sees a later change. The native structure is
  copy-on-write rather than a persistent tree: the role map and the channel map are
  each shared until a change copies the one it touches (O(roles) for a role change,
  O(channels) for a channel change, whose other channels' overwrites stay shared).
  Changes are rare and reads are constant, and reads (`compute/4`, and the caches of
  `GuildKit.Audience`) are plain hash lookups, faster than a persistent map's (see
  `bench/RESULTS.md`).

  Like every NIF resource, a value means nothing on another node: to send one there,
  send `to_options/1` and rebuild it with `new/1`.

  Every value carries stamps that say which parts changed (the base part: `@everyone`,
  roles and owner; and each channel). A change that leaves a part as it was keeps its
  stamp, which lets `GuildKit.Audience` keep what it cached about it.

  ## Errors

  Bits that are not an integer in `0..2^64-1`, a malformed overwrite, a bad option or
  an unknown channel raise `ArgumentError`; a call that raises returns no new value, so
  nothing changes.
  """

  alias GuildKit.Native

  @enforce_keys [:ref]
  defstruct [:ref]

  @typedoc "Immutable permissions of one guild."
  @opaque t :: %__MODULE__{ref: reference()}

  @typedoc "Permission bits: an integer in `0..2^64-1`."
  @type bits :: non_neg_integer()

  @typedoc "A channel permission overwrite."
  @type overwrite ::
          {:everyone, allow :: bits(), deny :: bits()}
          | {:role, role_id :: term(), allow :: bits(), deny :: bits()}
          | {:member, member_id :: term(), allow :: bits(), deny :: bits()}

  @all 0xFFFF_FFFF_FFFF_FFFF
  @view_channel 0x400
  @administrator 0x8

  defguardp is_bits(bits) when is_integer(bits) and bits >= 0 and bits <= @all

  @doc """
  `VIEW_CHANNEL` (`0x400`): may see a channel and its events.

      iex> GuildKit.Permissions.view_channel()
      0x400
  """
  @spec view_channel() :: bits()
  def view_channel, do: @view_channel

  @doc """
  `ADMINISTRATOR` (`0x8`): every permission in every channel, overwrites bypassed.

      iex> GuildKit.Permissions.administrator()
      8
  """
  @spec administrator() :: bits()
  def administrator, do: @administrator

  @doc """
  Every permission: all 64 bits.

      iex> GuildKit.Permissions.all()
      0xFFFF_FFFF_FFFF_FFFF
  """
  @spec all() :: bits()
  def all, do: @all

  @doc """
  Returns permissions with the given `@everyone` bits, roles and owner, and no channels.

  ## Options

    * `:everyone` - the `@everyone` role's bits (default `0`).
    * `:roles` - `%{role_id => bits}` (default `%{}`; a list of `{role_id, bits}` pairs
      is taken too, a later pair replacing an earlier one).
    * `:owner` - the owner's member id, or `nil` for none (default `nil`).
    * `:channels` - `%{channel_id => [overwrite]}` (default `%{}`, or a list of pairs),
      as `put_channel/3` takes them; with the others, what `to_options/1` returns.

  ## Examples

      iex> perms = GuildKit.Permissions.new(everyone: 0x400, roles: %{1 => 0x800}, owner: :ann)
      iex> GuildKit.Permissions.compute(perms, :bob, [1])
      0xC00
      iex> GuildKit.Permissions.compute(perms, :ann, [])
      0xFFFF_FFFF_FFFF_FFFF

  ## Performance

  O(roles + channels + overwrites); large ones are built on a dirty CPU scheduler.
  """
  @spec new(keyword()) :: t()
  def new(opts \\ []) do
    opts = GuildKit.Describe.options!(opts, everyone: 0, roles: %{}, owner: nil, channels: %{})

    everyone = validate_bits!(opts[:everyone], ":everyone")
    roles = validate_map!(opts[:roles], ":roles", "role_id => bits", &validate_role!/1)

    channels =
      validate_map!(
        opts[:channels],
        ":channels",
        "channel_id => overwrites",
        &validate_channel!/1
      )

    wrap(Native.permissions_new(everyone, roles, owner_list(opts[:owner]), channels))
  end

  @doc """
  Sets a role's bits, adding the role if it is new.

  ## Examples

      iex> perms = GuildKit.Permissions.new() |> GuildKit.Permissions.put_role(:mods, 0x400)
      iex> GuildKit.Permissions.compute(perms, :ann, [:mods])
      0x400

  ## Performance

  O(roles): the role map is copied, on a dirty CPU scheduler when it is large.
  """
  @spec put_role(t(), term(), bits()) :: t()
  def put_role(%__MODULE__{ref: ref}, role_id, bits) do
    bits = validate_bits!(bits, "the role's bits")
    wrap(Native.permissions_put_role(ref, role_id, bits))
  end

  def put_role(other, _role_id, _bits), do: raise_not_permissions(other)

  @doc """
  Removes a role. Members still holding it keep nothing from it, and its overwrites no
  longer apply. Removing a role the model does not know changes nothing.

  ## Examples

      iex> perms = GuildKit.Permissions.new(roles: %{mods: 0x400})
      iex> perms |> GuildKit.Permissions.delete_role(:mods) |> GuildKit.Permissions.compute(:ann, [:mods])
      0

  ## Performance

  O(roles): the role map is copied, on a dirty CPU scheduler when it is large.
  """
  @spec delete_role(t(), term()) :: t()
  def delete_role(%__MODULE__{ref: ref}, role_id) do
    wrap(Native.permissions_delete_role(ref, role_id))
  end

  def delete_role(other, _role_id), do: raise_not_permissions(other)

  @doc """
  Sets the `@everyone` role's bits.

  ## Examples

      iex> perms = GuildKit.Permissions.new() |> GuildKit.Permissions.put_everyone(0x400)
      iex> GuildKit.Permissions.compute(perms, :ann, [])
      0x400

  ## Performance

  O(1).
  """
  @spec put_everyone(t(), bits()) :: t()
  def put_everyone(%__MODULE__{ref: ref}, bits) do
    wrap(Native.permissions_put_everyone(ref, validate_bits!(bits, "the @everyone bits")))
  end

  def put_everyone(other, _bits), do: raise_not_permissions(other)

  @doc """
  Sets the guild owner's member id, or `nil` for none.

  ## Examples

      iex> perms = GuildKit.Permissions.new() |> GuildKit.Permissions.put_owner(:ann)
      iex> GuildKit.Permissions.compute(perms, :ann, []) == GuildKit.Permissions.all()
      true

  ## Performance

  O(1).
  """
  @spec put_owner(t(), term() | nil) :: t()
  def put_owner(%__MODULE__{ref: ref}, member_id) do
    wrap(Native.permissions_put_owner(ref, owner_list(member_id)))
  end

  def put_owner(other, _member_id), do: raise_not_permissions(other)

  @doc """
  Sets a channel's overwrites (replacing any it had), adding the channel if it is new.

  Each overwrite is `{:everyone, allow, deny}`, `{:role, role_id, allow, deny}` or
  `{:member, member_id, allow, deny}`; several for one target are merged (see the
  module docs). Overwrites may name roles the model does not know yet: they apply once
  the role is put.

  ## Examples

      iex> perms =
      ...>   GuildKit.Permissions.new(everyone: 0x400)
      ...>   |> GuildKit.Permissions.put_channel(:secret, [{:everyone, 0, 0x400}, {:member, :ann, 0x400, 0}])
      iex> GuildKit.Permissions.compute(perms, :ann, [], :secret)
      0x400
      iex> GuildKit.Permissions.compute(perms, :bob, [], :secret)
      0

  ## Performance

  O(channels + overwrites): the channel map's pointers are copied; other channels'
  overwrites are shared. More than a few hundred overwrites are handled on a dirty CPU
  scheduler.
  """
  @spec put_channel(t(), term(), [overwrite()]) :: t()
  def put_channel(%__MODULE__{ref: ref}, channel_id, overwrites) do
    validate_overwrites!(overwrites)
    wrap(Native.permissions_put_channel(ref, channel_id, overwrites))
  end

  def put_channel(other, _channel_id, _overwrites), do: raise_not_permissions(other)

  @doc """
  Removes a channel and its overwrites. Removing a channel the model does not know
  changes nothing.

  ## Examples

      iex> perms = GuildKit.Permissions.new() |> GuildKit.Permissions.put_channel(:a, [])
      iex> perms |> GuildKit.Permissions.delete_channel(:a) |> GuildKit.Permissions.has_channel?(:a)
      false

  ## Performance

  O(channels): the channel map's pointers are copied, on a dirty CPU scheduler when
  there are many.
  """
  @spec delete_channel(t(), term()) :: t()
  def delete_channel(%__MODULE__{ref: ref}, channel_id) do
    wrap(Native.permissions_delete_channel(ref, channel_id))
  end

  def delete_channel(other, _channel_id), do: raise_not_permissions(other)

  @doc """
  Returns a member's base permissions: `@everyone` and its roles, every permission for
  the owner and administrators.

  ## Examples

      iex> perms = GuildKit.Permissions.new(everyone: 0x400, roles: %{admins: 0x8})
      iex> GuildKit.Permissions.compute(perms, :ann, [:unknown_role])
      0x400
      iex> GuildKit.Permissions.compute(perms, :bob, [:admins]) == GuildKit.Permissions.all()
      true

  ## Performance

  O(roles held).
  """
  @spec compute(t(), term(), [term()]) :: bits()
  def compute(%__MODULE__{ref: ref}, member_id, role_ids) when is_list(role_ids) do
    Native.permissions_compute(ref, member_id, role_ids)
  end

  def compute(%__MODULE__{}, _member_id, role_ids), do: raise_not_role_ids(role_ids)
  def compute(other, _member_id, _role_ids), do: raise_not_permissions(other)

  @doc """
  Returns a member's permissions in a channel (see the module docs). Raises
  `ArgumentError` when the model has no such channel.

  ## Examples

      iex> perms =
      ...>   GuildKit.Permissions.new(everyone: 0x400, roles: %{muted: 0})
      ...>   |> GuildKit.Permissions.put_channel(:general, [{:role, :muted, 0, 0x800}, {:everyone, 0x800, 0}])
      iex> GuildKit.Permissions.compute(perms, :ann, [], :general)
      0xC00
      iex> GuildKit.Permissions.compute(perms, :bob, [:muted], :general)
      0x400

  ## Performance

  O(roles held).
  """
  @spec compute(t(), term(), [term()], term()) :: bits()
  def compute(%__MODULE__{ref: ref}, member_id, role_ids, channel_id) when is_list(role_ids) do
    Native.permissions_compute_channel(ref, member_id, role_ids, channel_id)
  end

  def compute(%__MODULE__{}, _member_id, role_ids, _channel_id), do: raise_not_role_ids(role_ids)
  def compute(other, _member_id, _role_ids, _channel_id), do: raise_not_permissions(other)

  @doc """
  Returns whether the model has the channel.

  ## Examples

      iex> perms = GuildKit.Permissions.new() |> GuildKit.Permissions.put_channel(:a, [])
      iex> {GuildKit.Permissions.has_channel?(perms, :a), GuildKit.Permissions.has_channel?(perms, :b)}
      {true, false}

  ## Performance

  O(1).
  """
  @spec has_channel?(t(), term()) :: boolean()
  def has_channel?(%__MODULE__{ref: ref}, channel_id) do
    Native.permissions_has_channel(ref, channel_id)
  end

  def has_channel?(other, _channel_id), do: raise_not_permissions(other)

  @doc """
  Returns the options that rebuild these permissions with `new/1`, for example on
  another node. Roles and channels are maps; each channel's overwrites are listed as
  merged (see the module docs): `@everyone` first (when it has bits), then roles, then
  members, each in id order.

  ## Examples

      iex> perms = GuildKit.Permissions.new(everyone: 0x400, roles: %{mods: 0x8})
      iex> perms = GuildKit.Permissions.put_channel(perms, :a, [{:role, :mods, 1, 0}, {:role, :mods, 2, 0}])
      iex> GuildKit.Permissions.to_options(perms)
      [everyone: 0x400, roles: %{mods: 0x8}, owner: nil, channels: %{a: [{:role, :mods, 3, 0}]}]

  ## Performance

  O(roles + channels + overwrites). Sorting many of them runs on a dirty CPU
  scheduler, and the terms come in chunks of a fraction of a megabyte, so that even a
  huge value never holds a scheduler, nor costs the caller one long pause, at once.
  """
  @spec to_options(t()) :: keyword()
  def to_options(%__MODULE__{ref: ref}) do
    {everyone, owner, roles, channels, cursor} = Native.permissions_export(ref)
    {roles, channels} = export_rest(cursor, [roles], [channels])

    [
      everyone: everyone,
      roles: map_in_steps(roles),
      owner: List.first(owner),
      channels: Map.new(GuildKit.Chunks.join(channels))
    ]
  end

  def to_options(other), do: raise_not_permissions(other)

  # A map of many pairs is built one put at a time: `:maps.from_list/1` (Map.new/1) of
  # 200,000 pairs yields only every few milliseconds of work.
  defp map_in_steps(pairs) when length(pairs) <= 4096, do: Map.new(pairs)
  defp map_in_steps(pairs), do: Enum.reduce(pairs, %{}, fn {k, v}, map -> Map.put(map, k, v) end)

  # Big values come in chunks, so that no call builds (and no heap takes in) more than a
  # fraction of a megabyte at once.
  defp export_rest(nil, roles, channels) do
    {Enum.concat(Enum.reverse(roles)), Enum.reverse(channels)}
  end

  defp export_rest(cursor, roles, channels) do
    {more_roles, more_channels, cursor} = Native.permissions_export_next(cursor)
    export_rest(cursor, [more_roles | roles], [more_channels | channels])
  end

  @doc false
  # The native value, for GuildKit.Audience.
  @spec native(t()) :: reference()
  def native(%__MODULE__{ref: ref}), do: ref
  def native(other), do: raise_not_permissions(other)

  defp wrap(ref), do: %__MODULE__{ref: ref}

  defp owner_list(nil), do: []
  defp owner_list(member_id), do: [member_id]

  defp validate_bits!(bits, _what) when is_bits(bits), do: bits

  defp validate_bits!(bits, what) do
    raise ArgumentError,
          "expected #{what} to be an integer in 0..2^64-1, got: #{GuildKit.Describe.describe(bits)}"
  end

  # The entries of a map, or of a proper list of {key, value} pairs (the last of equal
  # keys wins, as in Map.new/1), each checked by `validate_entry`. `option` and `shape`
  # name the option and what it should be, for the error.
  defp validate_map!(map, _option, _shape, validate_entry) when is_map(map) do
    Enum.each(map, validate_entry)
    Map.to_list(map)
  end

  defp validate_map!(pairs, option, shape, validate_entry) do
    case pairs(pairs, []) do
      {:ok, pairs} ->
        validate_map!(Map.new(pairs), option, shape, validate_entry)

      :error ->
        raise ArgumentError,
              "expected #{option} to be a map of #{shape}, got: #{GuildKit.Describe.describe(pairs)}"
    end
  end

  defp validate_role!({_role_id, bits}) when is_bits(bits), do: :ok

  defp validate_role!({role_id, bits}) do
    raise ArgumentError,
          "expected the bits of role #{GuildKit.Describe.describe(role_id)} to be an integer in 0..2^64-1, got: " <>
            GuildKit.Describe.describe(bits)
  end

  defp validate_channel!({_channel_id, overwrites}), do: validate_overwrites!(overwrites)

  # A proper list of {key, value} pairs, in order.
  defp pairs([], acc), do: {:ok, Enum.reverse(acc)}
  defp pairs([{_key, _value} = pair | rest], acc), do: pairs(rest, [pair | acc])
  defp pairs(_other, _acc), do: :error

  defp validate_overwrites!(overwrites), do: validate_overwrites!(overwrites, overwrites, 0)

  defp validate_overwrites!([], _overwrites, _index), do: :ok

  defp validate_overwrites!([overwrite | rest], overwrites, index) do
    case overwrite do
      {:everyone, allow, deny} when is_bits(allow) and is_bits(deny) -> :ok
      {:role, _, allow, deny} when is_bits(allow) and is_bits(deny) -> :ok
      {:member, _, allow, deny} when is_bits(allow) and is_bits(deny) -> :ok
      other -> raise_bad_overwrite(other, index)
    end

    validate_overwrites!(rest, overwrites, index + 1)
  end

  defp validate_overwrites!(_improper, overwrites, _index) do
    raise ArgumentError,
          "expected overwrites to be a list, got: #{GuildKit.Describe.describe(overwrites)}"
  end

  defp raise_bad_overwrite(overwrite, index) do
    raise ArgumentError,
          "expected overwrite #{index} to be {:everyone, allow, deny}, {:role, role_id, allow, deny} " <>
            "or {:member, member_id, allow, deny} with allow and deny integers in 0..2^64-1, got: " <>
            GuildKit.Describe.describe(overwrite)
  end

  defp raise_not_role_ids(role_ids) do
    raise ArgumentError,
          "expected role ids to be a list, got: #{GuildKit.Describe.describe(role_ids)}"
  end

  defp raise_not_permissions(other) do
    raise ArgumentError,
          "expected a GuildKit.Permissions, got: #{GuildKit.Describe.describe(other)}"
  end

  defimpl Inspect do
    def inspect(%{ref: ref}, _opts) do
      {roles, channels} = GuildKit.Native.permissions_info(ref)
      "#GuildKit.Permissions<roles: #{roles}, channels: #{channels}>"
    end
  end
end

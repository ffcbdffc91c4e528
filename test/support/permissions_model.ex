defmodule GuildKit.Test.PermissionsModel do
  @moduledoc """
  A pure-Elixir reference implementation of `GuildKit.Permissions`, written straight
  from Discord's algorithm (as stated in `GuildKit.Permissions`' moduledoc) over plain
  maps and the overwrite lists exactly as they were given, for oracle tests and the
  `Enum.filter` baseline of `bench/permissions.exs`.

  Ids are compared as map keys and patterns compare them (`===`).
  """

  import Bitwise

  @all 0xFFFF_FFFF_FFFF_FFFF
  @administrator 0x8

  defstruct everyone: 0, roles: %{}, owner: nil, channels: %{}

  @type t :: %__MODULE__{
          everyone: non_neg_integer(),
          roles: %{term() => non_neg_integer()},
          owner: term(),
          channels: %{term() => [tuple()]}
        }

  @doc "A model with the options of `GuildKit.Permissions.new/1`."
  @spec new(keyword()) :: t()
  def new(opts \\ []) do
    %__MODULE__{
      everyone: Keyword.get(opts, :everyone, 0),
      roles: Keyword.get(opts, :roles, %{}),
      owner: Keyword.get(opts, :owner),
      channels: Keyword.get(opts, :channels, %{})
    }
  end

  def put_role(model, role_id, bits), do: %{model | roles: Map.put(model.roles, role_id, bits)}
  def delete_role(model, role_id), do: %{model | roles: Map.delete(model.roles, role_id)}
  def put_everyone(model, bits), do: %{model | everyone: bits}
  def put_owner(model, member_id), do: %{model | owner: member_id}

  def put_channel(model, channel_id, overwrites),
    do: %{model | channels: Map.put(model.channels, channel_id, overwrites)}

  def delete_channel(model, channel_id),
    do: %{model | channels: Map.delete(model.channels, channel_id)}

  @doc "Base permissions."
  @spec compute(t(), term(), [term()]) :: non_neg_integer()
  def compute(%__MODULE__{owner: owner} = model, member_id, role_ids) do
    if owner != nil and owner === member_id do
      @all
    else
      bits =
        Enum.reduce(role_ids, model.everyone, fn role_id, acc ->
          acc ||| Map.get(model.roles, role_id, 0)
        end)

      if (bits &&& @administrator) != 0, do: @all, else: bits
    end
  end

  @doc "Permissions in a channel; raises `KeyError` for an unknown channel."
  @spec compute(t(), term(), [term()], term()) :: non_neg_integer()
  def compute(model, member_id, role_ids, channel_id) do
    overwrites = Map.fetch!(model.channels, channel_id)

    case compute(model, member_id, role_ids) do
      @all ->
        @all

      base ->
        known = Enum.filter(role_ids, &Map.has_key?(model.roles, &1))

        everyone = for {:everyone, allow, deny} <- overwrites, do: {allow, deny}

        roles =
          for {:role, role_id, allow, deny} <- overwrites,
              Enum.member?(known, role_id),
              do: {allow, deny}

        member = for {:member, id, allow, deny} <- overwrites, id === member_id, do: {allow, deny}

        base
        |> apply_union(everyone)
        |> apply_union(roles)
        |> apply_union(member)
    end
  end

  # `perms &&& ~~~deny ||| allow` with the unions of the denies and allows.
  defp apply_union(perms, overwrites) do
    {allow, deny} =
      Enum.reduce(overwrites, {0, 0}, fn {a, d}, {allow, deny} -> {allow ||| a, deny ||| d} end)

    (perms &&& bnot(deny) &&& @all) ||| allow
  end
end

defmodule GuildKit.Test.EstimatorTerms do
  @moduledoc """
  Seeded generators of large terms shaped like a guild's state, for accuracy tests
  and benchmarks. Every function takes a `:rand` state (see `seed/1`) and returns
  `{term, state}`, so that a run can be replayed from its printed seed.
  """

  defmodule Member do
    @moduledoc false
    defstruct [:id, :nick, :roles, :joined_at, :flags]
  end

  @doc "A `:rand` state for `seed`."
  def seed(seed), do: :rand.seed_s(:exsss, {seed, seed * 7 + 1, seed * 13 + 2})

  @doc "A member struct: a snowflake id, a nickname of varying length, 0-5 roles."
  def member(id, rand) do
    {nick_len, rand} = :rand.uniform_s(24, rand)
    {roles, rand} = :rand.uniform_s(6, rand)
    {role_ids, rand} = repeat(roles - 1, rand, fn r -> :rand.uniform_s(1_000_000, r) end)

    member = %Member{
      id: 100_000_000_000_000_000 + id,
      nick: :binary.copy("n", nick_len),
      roles: role_ids,
      joined_at: 1_600_000_000 + id,
      flags: rem(id, 8)
    }

    {member, rand}
  end

  @doc "A map of `n` members keyed by id."
  def members(n, rand) do
    {pairs, rand} =
      Enum.map_reduce(1..n, rand, fn id, rand ->
        {member, rand} = member(id, rand)
        {{id, member}, rand}
      end)

    {Map.new(pairs), rand}
  end

  @doc "A list of `n` small maps of the same shape and varying contents."
  def small_maps(n, rand) do
    Enum.map_reduce(1..n, rand, fn i, rand ->
      {x, rand} = :rand.uniform_s(1_000_000, rand)
      {%{id: i, score: x * 1.5, tag: if(rem(x, 3) == 0, do: "vip", else: :normal)}, rand}
    end)
  end

  @doc "One term of a randomly chosen shape: the mixed data of a real state."
  def mixed(rand) do
    {shape, rand} = :rand.uniform_s(8, rand)
    {x, rand} = :rand.uniform_s(1_000_000, rand)

    term =
      case shape do
        1 -> x
        2 -> x * 1.5
        3 -> :binary.copy("b", rem(x, 40))
        4 -> :binary.copy("B", 65 + rem(x, 200))
        5 -> {x, :atom, x * 2}
        6 -> %{a: x, b: [x, x + 1], c: "c"}
        7 -> Enum.to_list(1..rem(x, 12))
        8 -> 1_000_000_000_000_000_000_000 + x
      end

    {term, rand}
  end

  @doc "A list, tuple or map (by integer keys) of `n` mixed terms."
  def mixed(kind, n, rand) do
    {items, rand} = repeat(n, rand, &mixed/1)

    term =
      case kind do
        :list -> items
        :tuple -> List.to_tuple(items)
        :map -> items |> Enum.with_index() |> Map.new(fn {v, i} -> {i, v} end)
      end

    {term, rand}
  end

  @doc """
  A guild's state: members, sessions (by session id, with pids), the member list (a
  map used as a set of `{rank, id}`), refcounted binaries, and some settings.
  """
  def guild_state(members, rand) do
    {member_map, rand} = members(members, rand)
    online = div(members, 4)

    {sessions, rand} =
      Enum.map_reduce(1..online, rand, fn i, rand ->
        {status, rand} = :rand.uniform_s(3, rand)

        session = %{
          pid: self(),
          user_id: 100_000_000_000_000_000 + i,
          status: elem({:online, :idle, :dnd}, status - 1),
          since: 1_700_000_000 + i
        }

        {{"session-" <> Integer.to_string(i), session}, rand}
      end)

    member_list = Map.new(1..members, &{{rem(&1, 7), &1}, []})
    icons = for i <- 1..200, do: :binary.copy(<<i>>, 1024 + i)

    state = %{
      id: 123_456_789_012_345_678,
      name: "The Guild",
      members: member_map,
      sessions: Map.new(sessions),
      member_list: member_list,
      icons: icons,
      settings: %{max_members: 1_000_000, region: "eu", features: [:threads, :voice]}
    }

    {state, rand}
  end

  @doc """
  Hostile terms of every kind, by name: huge binaries and bignums, wide tuples, deep
  closures, equal but not identical terms, sub-binaries and bit-offset binaries, maps
  whose walk hashes huge keys, and maps nested deeper than any breakdown goes. About
  150 MB of binaries, most of them shared.
  """
  def hostile do
    huge = :binary.copy("h", 100_000_000)
    keys = :rand.bytes(2_000_000)

    %{
      huge_binary: huge,
      binaries: List.to_tuple(for i <- 1..16, do: :binary.copy(<<i>>, 4_000_000)),
      bignum: :binary.decode_unsigned(:binary.copy(<<255>>, 3_750_000)),
      wide_tuple: List.to_tuple(Enum.to_list(1..1_000_000)),
      deep_closures: Enum.reduce(1..100_000, :leaf, fn _, inner -> capture(inner) end),
      funs_over_huge: for(i <- 1..1000, do: capture({i, huge})),
      equal_not_identical:
        Map.new(1..100_000, &{if(rem(&1, 2) == 0, do: &1, else: &1 * 1.0), &1}),
      bit_offsets: for(i <- 0..99, do: shifted(binary_part(huge, i * 200_000, 1_000_000))),
      huge_bitstring: <<binary_part(huge, 0, 20_000_000)::binary, 1::3>>,
      slices: for(i <- 0..999, do: binary_part(huge, i * 1000, 50_000_000)),
      huge_keys: Map.new(0..99, &{binary_part(keys, &1 * 1000, 1_000_000), &1}),
      flat_huge_keys: Map.new(0..31, &{binary_part(keys, &1 * 1000, 1_000_000), &1}),
      deep_maps: Enum.reduce(1..8000, %{}, fn i, inner -> %{i => inner} end)
    }
  end

  @doc "`bytes` as a sub-binary at bit offset 3 (a copy of them, shifted)."
  def shifted(bytes) do
    <<_::3, shifted::binary-size(byte_size(bytes)), _::5>> = <<0::3, bytes::binary, 0::5>>
    shifted
  end

  # A compiled closure (erl_eval's would capture every binding).
  defp capture(term), do: fn -> term end

  defp repeat(n, rand, _fun) when n <= 0, do: {[], rand}
  defp repeat(n, rand, fun), do: Enum.map_reduce(1..n, rand, fn _, rand -> fun.(rand) end)
end

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

  defp repeat(n, rand, _fun) when n <= 0, do: {[], rand}
  defp repeat(n, rand, fun), do: Enum.map_reduce(1..n, rand, fn _, rand -> fun.(rand) end)
end

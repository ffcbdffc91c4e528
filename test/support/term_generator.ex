defmodule GuildKit.Test.TermGenerator do
  @moduledoc """
  Seeded random Erlang terms for oracle tests.

  Draws from small pools on purpose, so that random operations collide often (adds of
  present terms, removes of absent ones), and covers the corners of Erlang term order:
  `1` vs `1.0`, bignums, floats near 2^53 and integers just past it, both zeros,
  nested tuples, lists and maps (small and large), binaries with NUL bytes and
  non-Latin-1 atoms.
  """

  @atoms [:a, :b, nil, true, false, :"", :é, :ÿ, :Ā, :日本, :"with space", :"\0nul"]
  @binaries [
    "",
    <<0>>,
    <<0, 0>>,
    <<0, 1>>,
    "a",
    "a\0",
    "a\0b",
    <<255>>,
    <<255, 0>>,
    "zz",
    <<200, 0, 3>>
  ]
  @two_53 9_007_199_254_740_992

  @doc "Seeds the process's random generator and returns the seed, for printing."
  @spec seed(integer() | nil) :: integer()
  def seed(seed \\ nil) do
    seed = seed || :erlang.unique_integer([:positive]) + System.os_time()
    :rand.seed(:exsss, {seed, seed * 3 + 1, seed * 7 + 2})
    seed
  end

  @doc "The seed given in `GUILD_KIT_SEED`, to replay a randomized test, or nil."
  @spec seed_from_env() :: integer() | nil
  def seed_from_env do
    case System.get_env("GUILD_KIT_SEED") do
      nil -> nil
      seed -> String.to_integer(seed)
    end
  end

  @doc """
  Seeds the random generator of the calling process with `GUILD_KIT_SEED` when set,
  otherwise with `default` (nil: a new seed), and prints the seed under `label` so that
  a run can be replayed. Returns the seed.
  """
  @spec seed!(String.t(), integer() | nil) :: integer()
  def seed!(label, default \\ nil) do
    seed = seed(seed_from_env() || default)
    IO.puts("#{label} seed: #{seed}")
    seed
  end

  @doc "-0.0, built from its bits so that no compiler folds it into 0.0."
  @spec negative_zero() :: float()
  def negative_zero, do: :erlang.binary_to_term(<<131, 70, 128, 0, 0, 0, 0, 0, 0, 0>>)

  @doc """
  Terms of hostile sizes and shapes, each as `{name, builder}` so that a test builds
  one at a time: binaries and bignums far past the element limit and just under it,
  wide tuples and maps, long and deep lists, deep nesting, unsupported terms at the
  far end of large ones, and numbers that are equal but not identical.
  """
  @spec hostile() :: [{String.t(), (() -> term())}]
  def hostile do
    mib16 = 16 * 1024 * 1024

    [
      {"400 MB binary", fn -> :binary.copy(<<0>>, 400_000_000) end},
      {"[100 MB binary]", fn -> [:binary.copy(<<1>>, 100_000_000)] end},
      {"largest storable binary", fn -> :binary.copy("a", mib16 - 4) end},
      {"smallest binary too large", fn -> :binary.copy("a", mib16 - 3) end},
      {"binary of 8 MiB zero bytes", fn -> :binary.copy(<<0>>, 8 * 1024 * 1024) end},
      {"sub-binary of a 100 MB binary",
       fn -> binary_part(:binary.copy("b", 100_000_000), 7, 5_000_000) end},
      {"tuple of 16 x 15 MB binaries",
       fn -> :binary.copy("x", 15_000_000) |> List.duplicate(16) |> List.to_tuple() end},
      {"3.75 MB bignum", fn -> Bitwise.bsl(1, 30_000_000) + 12_345 end},
      {"negative 4 MiB bignum", fn -> -Bitwise.bsl(1, 33_554_000) end},
      {"1,000 bignums of 2 KB", fn -> for i <- 1..1_000, do: Bitwise.bsl(i, 16_000) end},
      {"tuple of 2M small integers", fn -> Tuple.duplicate(7, 2_000_000) end},
      {"tuple of 16,777,215 zeros (the largest arity)", fn -> Tuple.duplicate(0, 16_777_215) end},
      {"list of 2M integers", fn -> Enum.to_list(1..2_000_000) end},
      {"map of 300,000 keys", fn -> Map.new(1..300_000, &{&1, &1}) end},
      {"map of 3M keys", fn -> Map.new(1..3_000_000, &{&1, []}) end},
      {"tuple nested 1M deep", fn -> Enum.reduce(1..1_000_000, :core, &{&1, &2}) end},
      {"list nested 1M deep", fn -> Enum.reduce(1..1_000_000, [], fn _, acc -> [acc] end) end},
      {"map key nested 200,000 deep", fn -> Enum.reduce(1..200_000, 0, &%{&2 => &1}) end},
      {"pid after 1M integers", fn -> Enum.to_list(1..1_000_000) ++ [self()] end},
      {"improper list of 1M", fn -> Enum.reduce(1..1_000_000, :tail, &[&1 | &2]) end},
      {"bitstring after 15 MB", fn -> {:binary.copy("c", 15_000_000), <<1::3>>} end},
      {"1 and 1.0 in 1M-element lists",
       fn -> {Enum.to_list(1..1_000_000), List.duplicate(1.0, 1_000_000)} end},
      {"-0.0 as a map key", fn -> %{negative_zero() => 0.0, 0 => -0.0} end},
      {"2^53 + 1 and its float", fn -> [@two_53 + 1, (@two_53 + 1) * 1.0] end}
    ]
  end

  @doc "A random supported term, nested at most `depth` levels."
  @spec term(non_neg_integer()) :: term()
  def term(depth \\ 2) do
    if depth == 0 or :rand.uniform(3) > 1, do: scalar(), else: compound(depth - 1)
  end

  @doc "A random scalar: number, atom or binary."
  @spec scalar() :: term()
  def scalar do
    case :rand.uniform(10) do
      1 -> small_integer()
      2 -> small_integer() * 1.0
      3 -> bignum()
      4 -> near_two_53()
      5 -> Enum.random([0, 0.0, negative_zero(), 0.5, -0.5, 1.5, 1.0e300, -1.0e-300, 5.0e-324])
      6 -> :rand.uniform() * 4 - 2
      7 -> Enum.random(@atoms)
      8 -> Enum.random(@binaries)
      9 -> :rand.bytes(:rand.uniform(3) - 1) |> then(&Enum.random([&1, "x" <> &1]))
      10 -> Enum.random([-(2 ** 63), 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -(2 ** 64)])
    end
  end

  defp small_integer, do: :rand.uniform(11) - 6

  defp bignum do
    magnitude = 2 ** (60 + :rand.uniform(80)) + :rand.uniform(3) - 2
    if :rand.uniform(2) == 1, do: magnitude, else: -magnitude
  end

  defp near_two_53 do
    offset = :rand.uniform(5) - 3

    case :rand.uniform(4) do
      1 -> @two_53 + offset
      2 -> (@two_53 + offset) * 1.0
      3 -> -(@two_53 + offset)
      4 -> -(@two_53 + offset) * 1.0
    end
  end

  defp compound(depth) do
    case :rand.uniform(7) do
      1 -> {}
      2 -> List.to_tuple(for _ <- 1..:rand.uniform(3), do: term(depth))
      3 -> for _ <- 1..(:rand.uniform(4) - 1), do: term(depth)
      4 -> Map.new(for _ <- 1..(:rand.uniform(3) - 1), do: {map_key(depth), term(depth)})
      5 -> Enum.random([%{1 => :x, 1.0 => :y}, %{1 => :x}, %{1.0 => :x}, %{1 => 1.0}])
      6 -> large_map()
      7 -> {term(depth), term(depth)}
    end
  end

  defp map_key(depth) do
    if :rand.uniform(3) == 1, do: Enum.random([1, 1.0, 2, 0.0, -1]), else: term(depth)
  end

  # Over 32 keys: stored as a hash trie, compared in key order all the same.
  defp large_map do
    base = Map.new(1..33, &{&1, &1})

    case :rand.uniform(4) do
      1 -> base
      2 -> Map.put(base, 1.0, :float_key)
      3 -> Map.put(base, :rand.uniform(40) * 1.0, :float_key)
      4 -> Map.put(base, 7, :changed)
    end
  end
end

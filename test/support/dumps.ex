defmodule GuildKit.Test.Dumps do
  @moduledoc """
  Checks shared by the dump tests of the structures with `to_binary/1` and
  `from_binary/1` (`GuildKit.SortedSet`, `GuildKit.MemberList`): the ways a dump
  travels, every truncation of a dump, and random mutations of one.
  """

  import ExUnit.Assertions
  alias GuildKit.Test.TermGenerator

  @doc """
  Asserts that `structure` survives each way a dump travels: its dump (by
  `module.to_binary/1`) goes through `:erlang.term_to_binary/2` (plain, compressed and
  minor version 1) and back, and through a file written in `dir` and read back; each
  copy `module.from_binary/1` loads from it must pass `assert_same.(copy, structure)`.
  """
  @spec assert_transported(module(), struct(), Path.t(), (struct(), struct() -> term())) :: :ok
  def assert_transported(module, structure, dir, assert_same) do
    dump = module.to_binary(structure)
    path = Path.join(dir, "structure.dump")
    File.write!(path, dump)

    through_terms =
      for opts <- [[], [:compressed], [minor_version: 1]],
          do: dump |> :erlang.term_to_binary(opts) |> :erlang.binary_to_term()

    for copy <- through_terms ++ [File.read!(path)],
        do: assert_same.(module.from_binary(copy), structure)

    :ok
  end

  @doc """
  Asserts that `module.from_binary/1` of every proper prefix of `dump` raises an
  `ArgumentError` saying that the dump is truncated.
  """
  @spec assert_truncations_raise(module(), binary()) :: :ok
  def assert_truncations_raise(module, dump) do
    for len <- 0..(byte_size(dump) - 1) do
      error = assert_raise ArgumentError, fn -> module.from_binary(binary_part(dump, 0, len)) end

      assert error.message =~ "cannot load a #{inspect(module)} from this binary: truncated",
             "at #{len}: #{error.message}"
    end

    :ok
  end

  @doc """
  Loads `runs` random mutations of `dump` with `module.from_binary/1`, the random
  generator seeded with `seed` (printed by the caller, for a replay). Each mutation makes
  1 to `max_changes` changes: a byte flipped, the rest cut off, bytes inserted or a
  byte deleted. Asserts that each load raises an `ArgumentError` of `module`, or loads
  the very dump (a mutation may change nothing) into a copy that `check` accepts; and
  that some raised.
  """
  @spec assert_mutations_refused(
          module(),
          binary(),
          integer(),
          pos_integer(),
          pos_integer(),
          check
        ) ::
          :ok
        when check: (struct() -> term())
  def assert_mutations_refused(module, dump, seed, runs, max_changes, check) do
    TermGenerator.seed(seed)

    results =
      for _ <- 1..runs do
        mutated = mutate(dump, :rand.uniform(max_changes))

        try do
          copy = module.from_binary(mutated)
          assert mutated == dump, "seed #{seed}: a changed dump loaded"
          check.(copy)
          :loaded
        rescue
          error in ArgumentError ->
            assert error.message =~ "cannot load a #{inspect(module)} from this binary"
            :raised
        end
      end

    assert :raised in results
    :ok
  end

  defp mutate(binary, 0), do: binary

  defp mutate(binary, n) do
    size = byte_size(binary)
    at = :rand.uniform(max(size, 1)) - 1

    mutated =
      case :rand.uniform(4) do
        1 when size > 0 ->
          <<before::binary-size(at), byte, rest::binary>> = binary
          before <> <<Bitwise.bxor(byte, :rand.uniform(255))>> <> rest

        2 ->
          binary_part(binary, 0, at)

        3 ->
          <<before::binary-size(at), rest::binary>> = binary
          before <> :rand.bytes(:rand.uniform(4)) <> rest

        _ when size > 0 ->
          <<before::binary-size(at), _, rest::binary>> = binary
          before <> rest

        _ ->
          binary
      end

    mutate(mutated, n - 1)
  end
end

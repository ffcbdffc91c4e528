defmodule GuildKit.MemoryEstimator.Model do
  @moduledoc false
  # The size model reads OTP internals: object headers, OTP 25's layout of funs and
  # sub-binaries, the salts of map hashes, the reply :sys gives when a state function
  # throws. On first use this module checks them on this VM, once, and caches the
  # verdict in :persistent_term:
  #
  #   * the layout, on probe funs and sub-binaries of known contents, read in place by
  #     the NIF (which reads captured variables and parents only once it holds);
  #   * the sizes, `exact/1` against `:erts_debug.flat_size/1` on a fixed corpus of every
  #     kind of term;
  #   * the `:sys` protocol of `process/2`, on a probe Agent.
  #
  # Until the first two hold, no size is reported exact; until the third holds,
  # `process/2` sends nothing to other processes.

  alias GuildKit.Native

  @sizes_key {__MODULE__, :sizes_verified}
  @protocol_key {__MODULE__, :protocol_verified}

  @doc "True when the size model holds on this VM (checked once, then cached)."
  @spec sizes_verified?() :: boolean()
  def sizes_verified? do
    cached(@sizes_key, fn -> confirm_layout() and corpus_matches?() end)
  end

  @doc """
  True when `check.()` confirmed the `:sys` protocol `process/2` relies on, false when
  it refuted it (either verdict is cached), `:undecided` (not cached) when it could
  not tell.
  """
  @spec protocol_verified?((() -> boolean() | :undecided)) :: boolean() | :undecided
  def protocol_verified?(check), do: cached(@protocol_key, check)

  defp cached(key, check) do
    case :persistent_term.get(key, :unchecked) do
      :unchecked ->
        # Two first callers may both check: the verdict is the same.
        case check.() do
          verdict when is_boolean(verdict) ->
            :persistent_term.put(key, verdict)
            verdict

          :undecided ->
            :undecided
        end

      verdict ->
        verdict
    end
  end

  @doc false
  # Forgets the cached verdicts (for tests).
  def reset do
    :persistent_term.erase(@sizes_key)
    :persistent_term.erase(@protocol_key)
    :ok
  end

  defp confirm_layout do
    Native.memory_confirm_layout(fun_probes(), sub_binary_probes(), map_probes())
  end

  # Closures of every arity from 0 to 3 capturing 0 to 4 variables (immediates, boxed
  # terms, binaries, a fun), and an external fun. The values are made at run time, so
  # that no closure is a literal.
  defp fun_probes do
    small = :erlang.unique_integer()
    boxed = {:probe, small, self()}
    binary = "probe-" <> Integer.to_string(small)
    inner = fn -> small end

    funs = [
      inner,
      fn x -> {x, small, boxed} end,
      fn x, y -> {x, y, small, boxed, binary} end,
      fn x, y, z -> [x, y, z, small, boxed, binary, inner] end,
      fn -> :no_variables end,
      &:erlang.phash2/1
    ]

    for fun <- funs do
      {:arity, arity} = :erlang.fun_info(fun, :arity)
      {:env, env} = :erlang.fun_info(fun, :env)

      creator =
        case :erlang.fun_info(fun, :type) do
          {:type, :external} -> :external
          {:type, :local} -> elem(:erlang.fun_info(fun, :pid), 1)
        end

      {fun, arity, env, creator}
    end
  end

  # Slices of a refcounted binary at every kind of offset and length.
  defp sub_binary_probes do
    parent = :binary.copy(<<0xA5, 0x5A>>, 600)
    <<_::3, a::bitstring-size(803), _::bitstring>> = parent
    <<_::1, b::binary-size(100), _::bitstring>> = parent
    <<_::binary-size(10), c::binary-size(200), _::binary>> = parent
    <<d::bitstring-size(4005), _::bitstring>> = parent
    <<_::7, e::bitstring-size(806), _::bitstring>> = parent

    [
      {a, parent, 100, 3, 3},
      {b, parent, 100, 0, 1},
      {c, parent, 200, 0, 0},
      {d, parent, 500, 5, 0},
      {e, parent, 100, 6, 7}
    ]
  end

  # Flat maps of 0 to 32 keys, of every kind of key and value.
  defp map_probes do
    n = :erlang.unique_integer()
    maps = [%{}, %{n => :one}, %{a: n, b: "b", c: {n}, d: [n]}, Map.new(1..32, &{&1, n - &1})]
    for map <- maps, do: {map, :maps.keys(map), :maps.values(map)}
  end

  defp corpus_matches? do
    Enum.all?(corpus(), fn term ->
      {words, _off_heap, exact?, _visited, _total} = Native.memory_exact(term)
      exact? and words == :erts_debug.flat_size(term)
    end)
  end

  # One term of each kind the model sizes differently, built at run time.
  defp corpus do
    n = :erlang.unique_integer([:positive])
    bytes = fn count -> :binary.copy(<<rem(n, 256)>>, count) end
    {funs, sub_binaries} = {fun_probes(), sub_binary_probes()}
    # An alias takes a word more than a plain reference; it is one still once inactive.
    alias = :erlang.alias()
    :erlang.unalias(alias)

    [
      [0, :atom, self(), [], 2 ** 59 - 1, 2 ** 59, -(2 ** 59) - 1, 2 ** 64, -(2 ** 200)],
      [2 ** 4000 + n, n * 1.5, {}, {n, [n | n * 1.0]}, List.to_tuple(Enum.to_list(1..40))],
      [bytes.(0), bytes.(40), bytes.(64), bytes.(65), bytes.(1000), bytes.(9) <> "!"],
      [<<n::size(5)>>, <<n::size(515)>>, <<n::size(70)>>],
      Enum.map(sub_binaries, &elem(&1, 0)),
      [make_ref(), alias, remote_pid()],
      [%{}, Map.new(1..32, &{&1, n}), Map.new(1..33, &{&1, n}), Map.new(1..200, &{&1, [n]})],
      [Map.new(1..40, &{"key-#{&1}", &1}), Map.new(1..40, &{{&1, n}, &1 * 1.0})],
      Enum.map(funs, &elem(&1, 0)),
      [capture(Map.new(1..40, &{&1, n})), capture(capture(bytes.(100)))]
    ]
  end

  defp capture(term), do: fn -> term end

  # A pid of another node, made from its external format (node `probe@host`).
  defp remote_pid do
    node = "probe@host"
    :erlang.binary_to_term(<<131, 88, 119, byte_size(node), node::binary, 1::32, 0::32, 1::32>>)
  end
end

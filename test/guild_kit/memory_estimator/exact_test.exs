defmodule GuildKit.MemoryEstimator.ExactTest do
  # exact/1 against :erts_debug.flat_size/1, the oracle, on every row of the term-size
  # table, and the documented bounds where a NIF cannot see what flat_size sees.
  use ExUnit.Case, async: true

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Estimate

  defmodule Point do
    defstruct x: 0, y: 0, label: nil
  end

  defp assert_exact(term) do
    estimate = MemoryEstimator.exact(term)
    assert %Estimate{exact?: true} = estimate
    assert estimate.words == :erts_debug.flat_size(term), "for #{inspect(term, limit: 5)}"
    assert estimate.bytes == estimate.words * 8
    assert estimate.sampled == estimate.total
    estimate
  end

  # Functions defined here are compiled, so their closures are real funs (terms made by
  # the shell or erl_eval would capture the evaluator's bindings instead).
  defp closure_without_env, do: fn -> :ok end
  defp closure(x), do: fn -> x end
  defp closure(x, y), do: fn -> {x, y} end
  defp nested_closure(x), do: fn -> fn -> x end end

  # Binaries as the runtime makes them, opaque to compile-time folding.
  defp copy(byte, n), do: :binary.copy(<<byte>>, n)
  defp concat(a, b), do: a <> b
  defp append_bytes(n), do: Enum.reduce(1..n, <<>>, fn i, acc -> <<acc::binary, i>> end)

  describe "immediates take no words" do
    test "small integers, atoms, [] and local pids and ports" do
      for term <- [0, -1, 2 ** 59 - 1, -(2 ** 59), :atom, true, [], self(), hd(Port.list())] do
        assert %Estimate{words: 0, total: 1} = assert_exact(term)
      end
    end
  end

  describe "numbers" do
    test "bignums take a header and one word per 64-bit digit" do
      for n <- [2 ** 59, -(2 ** 59) - 1, 2 ** 63, -(2 ** 63), 2 ** 64 - 1, 2 ** 64, -(2 ** 64)] do
        assert_exact(n)
      end

      assert_exact(2 ** 1000)
      assert_exact(-(2 ** 4000) + 7)
      # Past the 4 KiB a normal scheduler encodes, on a dirty one.
      assert %Estimate{words: 1002} = assert_exact(2 ** 64_000)
    end

    test "floats" do
      for f <- [0.0, -0.0, 1.5, 1.0e300] do
        assert %Estimate{words: 2} = assert_exact(f)
      end
    end
  end

  describe "lists and tuples" do
    test "proper, improper and nested lists" do
      assert_exact([1, 2, 3])
      assert_exact([1 | 2])
      assert_exact([1, 2.0 | "tail"])
      assert_exact([[1, [2.0]], [], [[[3]]]])
      assert_exact(~c"a charlist")
      assert %Estimate{total: 4} = assert_exact([1, 2 | 3.0])
    end

    test "tuples, empty and large" do
      assert %Estimate{words: 0} = assert_exact({})
      assert_exact({1})
      assert_exact({1, {2.0, {"three", {}}}})
      assert_exact(List.to_tuple(Enum.map(1..100_000, &(&1 * 1.0))))
    end

    test "a long list walked on a dirty scheduler" do
      assert_exact(Enum.map(1..200_000, &{&1}))
    end
  end

  describe "binaries" do
    test "heap binaries up to 64 bytes" do
      for n <- [0, 1, 8, 9, 63, 64] do
        assert %Estimate{off_heap_binary_bytes: 0} =
                 assert_exact(copy(?a, n) |> binary_part(0, n))
      end

      for n <- [0, 1, 8, 9, 63, 64],
          do: assert_exact(:erlang.list_to_binary(List.duplicate(?b, n)))
    end

    test "refcounted binaries take 6 words and count their bytes off-heap" do
      for n <- [65, 100, 1_000_000] do
        assert %Estimate{words: 6, off_heap_binary_bytes: ^n} = assert_exact(copy(?c, n))
      end
    end

    test "large refcounted binaries are read on a normal scheduler" do
      # Their size is in their header: no reason to hand them to a dirty scheduler.
      binaries = Enum.map(1..50, fn _ -> copy(?d, 8_000_000) end)
      assert {400, 400_000_000, true, _, _} = GuildKit.Native.memory_exact(binaries)
    end

    test "sub-binaries of refcounted binaries" do
      parent = copy(?d, 300)

      assert %Estimate{words: 6, off_heap_binary_bytes: 70} =
               assert_exact(binary_part(parent, 3, 70))

      <<_::binary-size(5), rest::binary>> = parent
      assert_exact(rest)
      # OTP 25 copies small slices into heap binaries.
      assert %Estimate{words: 4} = assert_exact(binary_part(parent, 3, 10))
    end

    test "results of <> and appending are small sub-binaries of refcounted ones" do
      for term <- [concat(copy(?e, 3), copy(?f, 4)), append_bytes(10), append_bytes(100)] do
        assert %Estimate{words: 6} = assert_exact(term)
      end
    end

    test "a small binary received in a message is a small refcounted binary" do
      parent = self()
      small = append_bytes(10)
      spawn(fn -> send(parent, {:binary, small}) end)
      assert_receive {:binary, received}
      assert %Estimate{words: 6, off_heap_binary_bytes: 10} = assert_exact(received)
    end

    test "bitstrings that are not whole bytes, on heap binaries" do
      for bits <- [1, 7, 9, 63, 500] do
        assert_exact(<<0::size(bits)>>)
      end

      # Too big for a heap binary underneath: refcounted.
      assert %Estimate{words: 11} = assert_exact(<<0::size(515)>>)
      assert_exact(<<0::size(8001)>>)
    end
  end

  describe "maps" do
    test "empty and flat maps of 1 to 32 keys" do
      assert %Estimate{words: 3} = assert_exact(%{})

      for n <- 1..32 do
        assert_exact(Map.new(1..n, &{&1, &1}))
      end
    end

    test "maps that shrank back under 33 keys are flat again" do
      map = Map.new(1..40, &{&1, &1})
      assert_exact(Map.drop(map, Enum.to_list(1..10)))
    end

    test "hashmaps of 33 keys and more, with the trie counted from key hashes" do
      for n <- [33, 34, 40, 64, 100, 1000, 10_000, 100_000] do
        assert_exact(Map.new(1..n, &{&1, &1}))
      end

      assert_exact(Map.new(1..5000, &{"user:" <> Integer.to_string(&1), &1 * 1.0}))
      assert_exact(Map.new(1..5000, &{{&1, :tag, "x"}, [&1]}))
      assert_exact(Map.new(1..2000, &{%{id: &1}, &1}))
      assert_exact(Map.new(1..2000, &{&1 * 1.0, &1}))
    end

    @tag :slow
    test "a million keys: whole-hash collisions continue the trie on rehashed keys" do
      # About 116 pairs of keys share all 32 bits of their hash at this size.
      assert_exact(Map.new(1..1_000_000, &{&1, 0}))
      assert_exact(Map.new(1..1_000_000, &{&1 * 7_919_000_000_000_000_003, nil}))
    end

    test "nested maps and structs" do
      assert_exact(%Point{x: 1, y: 2.5, label: "p"})
      assert_exact(%{a: %{b: %{c: [%Point{}, %Point{label: copy(?l, 100)}]}}})
      assert_exact(URI.parse("https://example.com/path?query=1"))
      assert_exact(DateTime.utc_now())
      assert_exact(MapSet.new(1..100))
      assert_exact(Map.new(1..50, &{&1, %Point{x: &1}}))
    end
  end

  describe "references, pids and ports" do
    test "local references: plain, monitor, ETS table, NIF resource" do
      {:ok, pid} = Agent.start_link(fn -> :ok end)

      for ref <- [
            make_ref(),
            Process.monitor(pid),
            :ets.new(:table, []),
            GuildKit.SortedSet.new().ref
          ] do
        assert %Estimate{words: 3} = assert_exact(ref)
      end
    end

    test "references and pids of another node or an earlier incarnation of this one" do
      other_node = fn etf -> retag(etf, "other@host") end
      remote_ref = :erlang.binary_to_term(other_node.(:erlang.term_to_binary(make_ref())))
      remote_pid = :erlang.binary_to_term(other_node.(:erlang.term_to_binary(self())))
      remote_port = :erlang.binary_to_term(other_node.(:erlang.term_to_binary(hd(Port.list()))))

      <<131, 88, rest::binary>> = :erlang.term_to_binary(self())
      {node_atom, <<id::32, serial::32, creation::32>>} = split_atom(rest)

      earlier_pid =
        :erlang.binary_to_term(
          <<131, 88, node_atom::binary, id::32, serial::32, creation + 1::32>>
        )

      assert %Estimate{words: 5} = assert_exact(remote_ref)
      assert %Estimate{words: 4} = assert_exact(remote_pid)
      assert %Estimate{words: 4} = assert_exact(remote_port)
      assert %Estimate{words: 4} = assert_exact(earlier_pid)
      assert_exact({remote_ref, [remote_pid, self()], %{remote_port => make_ref()}})
    end
  end

  describe "funs" do
    test "with and without captured variables" do
      assert %Estimate{words: 5} = assert_exact(closure_without_env())
      assert %Estimate{words: 5} = assert_exact(&Enum.map/2)
      assert %Estimate{words: 6} = assert_exact(closure(1))
      assert_exact(closure(1.5))
      assert_exact(closure([1, 2, 3], {"four", 5.0}))
      assert_exact(nested_closure(%{a: 1}))
      assert_exact(closure(copy(?g, 1000)))
    end

    test "captured maps are rebuilt with the same trie, and pids stay local" do
      assert_exact(closure(Map.new(1..500, &{&1, &1})))
      assert_exact(closure(self(), make_ref()))
    end
  end

  describe "depth" do
    test "nesting a million levels deep" do
      deep_list = Enum.reduce(1..1_000_000, [], fn _, acc -> [acc] end)
      deep_tuple = Enum.reduce(1..1_000_000, {}, fn _, acc -> {acc, 1} end)
      deep_map = Enum.reduce(1..300_000, %{}, fn i, acc -> %{i => acc} end)
      deep_mixed = Enum.reduce(1..300_000, :leaf, fn i, acc -> [i, {acc}, 2.0] end)

      for term <- [deep_list, deep_tuple, deep_map, deep_mixed] do
        assert_exact(term)
      end
    end
  end

  describe "generated terms" do
    @seed 20_261_123
    test "exact equals flat_size on random terms built from every kind" do
      IO.puts("generated terms seed: #{@seed}")
      rand = :rand.seed_s(:exsss, @seed)

      Enum.reduce(1..300, rand, fn _, rand ->
        {term, rand} = random_term(rand, 4)
        assert_exact(term)
        rand
      end)
    end
  end

  describe "what the NIF API does not show, read in place" do
    test "an alias takes a word more than a plain reference" do
      alias_ref = :erlang.alias()
      assert %Estimate{words: 4} = assert_exact(alias_ref)
      :erlang.unalias(alias_ref)
      assert %Estimate{words: 4} = assert_exact(alias_ref)
    end

    test "sub-binaries at every bit offset, of refcounted and heap binaries" do
      for parent <- [copy(?h, 102), copy(?h, 40)], offset <- 0..7, bits <- [0, 1, 5, 7] do
        length = byte_size(parent) * 8 - 16 - bits

        <<_::size(offset), slice::bitstring-size(length), _::bitstring>> = parent
        assert_exact(slice)
        assert_exact(<<slice::bitstring-size(length - bits), 1::size(bits)>>)
      end

      <<_::1, shifted::binary-size(100), _::bitstring>> = copy(?h, 102)
      assert %Estimate{words: 11, off_heap_binary_bytes: 100} = assert_exact(shifted)
    end

    test "small bitstrings over a refcounted binary" do
      parent = copy(?i, 200)

      for bits <- [1, 9, 100, 511] do
        <<bitstring::bitstring-size(bits), _::bitstring>> = parent
        assert_exact(bitstring)
      end
    end

    test "a fun's captured binaries keep their kind" do
      small = append_bytes(10)
      <<_::3, shifted::binary-size(50), _::bitstring>> = copy(?s, 60)
      # 7 for the fun, 6 for each occurrence of the small refcounted binary.
      assert %Estimate{words: 19} = assert_exact(closure(small, small))
      assert_exact(closure(shifted, <<1::3>>))
    end
  end

  defp retag(etf, node_name) do
    <<131, tag, rest::binary>> = etf

    case tag do
      # NEWER_REFERENCE_EXT: length before the node.
      90 ->
        <<len::16, rest::binary>> = rest
        {_atom, after_node} = split_atom(rest)
        <<131, 90, len::16, atom_ext(node_name)::binary, after_node::binary>>

      _pid_or_port ->
        {_atom, after_node} = split_atom(rest)
        <<131, tag, atom_ext(node_name)::binary, after_node::binary>>
    end
  end

  defp atom_ext(name), do: <<118, byte_size(name)::16, name::binary>>

  defp split_atom(<<tag, len::16, name::binary-size(len), rest::binary>>) when tag in [100, 118],
    do: {<<tag, len::16, name::binary>>, rest}

  defp split_atom(<<tag, len, name::binary-size(len), rest::binary>>) when tag in [115, 119],
    do: {<<tag, len, name::binary>>, rest}

  # A random term of every kind, funs capturing every kind too.
  defp random_term(rand, 0), do: random_leaf(rand)

  defp random_term(rand, depth) do
    {kind, rand} = :rand.uniform_s(10, rand)

    case kind do
      k when k <= 4 ->
        random_leaf(rand)

      5 ->
        {items, rand} = random_terms(rand, depth, 6)
        {List.to_tuple(items), rand}

      6 ->
        {items, rand} = random_terms(rand, depth, 8)
        {tail, rand} = random_leaf(rand)
        {improper?, rand} = :rand.uniform_s(3, rand)

        if improper? == 1 and items != [] and not is_list(tail),
          do: {items ++ tail, rand},
          else: {items, rand}

      7 ->
        {n, rand} = :rand.uniform_s(45, rand)

        {values, rand} = Enum.map_reduce(1..n, rand, fn _, r -> random_term(r, depth - 1) end)

        {keys, rand} = Enum.map_reduce(1..n, rand, fn i, r -> random_key(r, i) end)
        {Map.new(Enum.zip(keys, values)), rand}

      8 ->
        {items, rand} = random_terms(rand, depth, 3)
        {closure(items), rand}

      9 ->
        {x, rand} = random_term(rand, depth - 1)
        {%Point{x: x, label: depth}, rand}

      10 ->
        {items, rand} = random_terms(rand, depth, 3)
        {closure(List.to_tuple(items), :captured), rand}
    end
  end

  defp random_terms(rand, depth, max) do
    {n, rand} = :rand.uniform_s(max + 1, rand)

    Enum.map_reduce(List.duplicate(nil, n - 1), rand, fn _, r ->
      random_term(r, depth - 1)
    end)
  end

  defp random_key(rand, i) do
    {kind, rand} = :rand.uniform_s(4, rand)

    key =
      case kind do
        1 -> i
        2 -> "key-#{i}"
        3 -> {i, :k}
        4 -> i * 1.0
      end

    {key, rand}
  end

  defp random_leaf(rand) do
    {kind, rand} = :rand.uniform_s(9, rand)
    {x, rand} = :rand.uniform_s(1_000_000, rand)

    leaf =
      case kind do
        1 -> x
        2 -> x * 2.5
        3 -> copy(?j, rem(x, 64))
        4 -> copy(?k, 65 + rem(x, 500))
        5 -> 2 ** 70 + x
        6 -> <<x::size(rem(x, 61) + 3)>>
        7 -> make_ref()
        8 -> :atom
        9 -> concat(copy(?m, rem(x, 20)), "!")
      end

    {leaf, rand}
  end
end

defmodule GuildKit.Handoff.SortedSetDumpTest do
  @moduledoc """
  `SortedSet.to_binary/1` and `from_binary/1`: round trips that give an equal set,
  through `:erlang.term_to_binary/1`, a file and another node; and every truncated,
  corrupted, foreign or forged dump raises `ArgumentError` and builds nothing invalid.
  Replay a randomized failure with `GUILD_KIT_SEED=<seed>`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.SortedSet
  alias GuildKit.Test.{Dumps, TermGenerator}

  @moduletag :tmp_dir

  defp assert_same(copy, set) do
    list = SortedSet.to_list(set)
    assert SortedSet.to_list(copy) == list
    assert SortedSet.size(copy) == SortedSet.size(set)
    refute SortedSet.read_only?(copy)

    for {term, i} <- Enum.with_index(list) do
      assert SortedSet.at(copy, i) == term
      assert SortedSet.find_index(copy, term) == i
    end

    assert SortedSet.at(copy, length(list)) == nil
  end

  defp random_set(seed, count) do
    TermGenerator.seed(seed)
    SortedSet.from_enumerable(for _ <- 1..count, do: TermGenerator.term(2))
  end

  test "a round trip gives an equal, independent set, for random terms" do
    seed = TermGenerator.seed!("dump round trip")

    for count <- [1, 10, 500, 3_000] do
      set = random_set(seed + count, count)
      copy = SortedSet.from_binary(SortedSet.to_binary(set))
      assert_same(copy, set)
      # Independent: changing one leaves the other as it was.
      SortedSet.add(copy, {:only, :in, :copy})
      refute SortedSet.member?(set, {:only, :in, :copy})
    end
  end

  test "empty sets, snapshots, floats and members stored out of line" do
    assert_same(SortedSet.from_binary(SortedSet.to_binary(SortedSet.new())), SortedSet.new())

    set =
      SortedSet.from_enumerable(
        [1.0, 2, -0.0, TermGenerator.negative_zero(), 2 ** 200] ++
          [:binary.copy("x", 10_000), {:binary.copy(<<0>>, 600)}, %{a: [1, 2.5]}]
      )

    snapshot = SortedSet.snapshot(set)
    assert_same(SortedSet.from_binary(SortedSet.to_binary(snapshot)), set)
    # Exact terms come back: a float stays a float.
    [first | _] = SortedSet.to_list(SortedSet.from_binary(SortedSet.to_binary(set)))
    assert first === hd(SortedSet.to_list(set))
  end

  test "a dump is taken at the call: later writes do not change it" do
    set = SortedSet.from_enumerable(1..100)
    dump = SortedSet.to_binary(set)
    SortedSet.add(set, 1000)
    assert SortedSet.to_list(SortedSet.from_binary(dump)) == Enum.to_list(1..100)
    assert SortedSet.to_binary(SortedSet.from_binary(dump)) == dump
  end

  test "survives :erlang.term_to_binary and a file round trip", %{tmp_dir: dir} do
    Dumps.assert_transported(SortedSet, random_set(7, 2_000), dir, &assert_same/2)
  end

  test "a dump inside a larger binary (a sub-binary) loads" do
    dump = SortedSet.to_binary(SortedSet.from_enumerable([:a, :b]))
    <<_::binary-size(3), sub::binary-size(byte_size(dump)), _::binary>> = "abc" <> dump <> "xyz"
    assert SortedSet.to_list(SortedSet.from_binary(sub)) == [:a, :b]
  end

  test "every truncation point of a small dump raises ArgumentError" do
    dump = SortedSet.to_binary(SortedSet.from_enumerable([{1, "amy"}, {2, "bob"}, 3.5, :c]))
    Dumps.assert_truncations_raise(SortedSet, dump)
  end

  test "corrupted, extended, foreign, future and wrong-kind dumps raise ArgumentError" do
    dump = SortedSet.to_binary(SortedSet.from_enumerable(1..50))
    size = byte_size(dump)
    <<head::binary-size(size - 1), last>> = dump

    assert_raise ArgumentError, ~r/corrupted dump: its checksum does not match/, fn ->
      SortedSet.from_binary(head <> <<Bitwise.bxor(last, 1)>>)
    end

    assert_raise ArgumentError, ~r/bytes were appended/, fn ->
      SortedSet.from_binary(dump <> <<0>>)
    end

    assert_raise ArgumentError, ~r/not a GuildKit dump/, fn ->
      SortedSet.from_binary("GuildKit")
    end

    assert_raise ArgumentError, ~r/truncated dump: 0 bytes/, fn -> SortedSet.from_binary("") end

    assert_raise ArgumentError, ~r/not a GuildKit dump/, fn ->
      SortedSet.from_binary(:erlang.term_to_binary(Enum.to_list(1..50)))
    end

    <<magic::binary-size(8), _version::16, rest::binary>> = dump

    assert_raise ArgumentError,
                 ~r/format version 2 is newer than this release reads \(up to 1\)/,
                 fn -> SortedSet.from_binary(magic <> <<2::little-16>> <> rest) end

    <<start::binary-size(10), _kind, rest::binary>> = dump

    assert_raise ArgumentError, ~r/a dump of an unknown kind \(9\)/, fn ->
      SortedSet.from_binary(start <> <<9>> <> rest)
    end
  end

  test "arguments that are not dumps or sets raise ArgumentError" do
    assert_raise ArgumentError, ~r/expected a binary made by GuildKit.SortedSet.to_binary/, fn ->
      SortedSet.from_binary(<<1::3>>)
    end

    assert_raise ArgumentError, ~r/expected a binary made by/, fn ->
      SortedSet.from_binary([SortedSet.to_binary(SortedSet.new())])
    end

    assert_raise ArgumentError, ~r/expected a GuildKit.SortedSet/, fn ->
      SortedSet.to_binary(%SortedSet{ref: make_ref()})
    end

    assert_raise ArgumentError, ~r/expected a GuildKit.SortedSet, got: :nope/, fn ->
      SortedSet.to_binary(:nope)
    end
  end

  test "random mutations of dumps never crash: each raises or yields a valid set" do
    seed = TermGenerator.seed!("dump mutation")
    set = random_set(seed, 300)
    dump = SortedSet.to_binary(set)

    Dumps.assert_mutations_refused(SortedSet, dump, seed, 3_000, 3, fn copy ->
      list = SortedSet.to_list(copy)
      assert list == Enum.sort(list) and list == Enum.dedup(list)
      assert SortedSet.size(copy) == length(list)
    end)
  end
end

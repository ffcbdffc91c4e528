defmodule GuildKit.Handoff.MemberListDumpTest do
  @moduledoc """
  `MemberList.to_binary/1` and `from_binary/1`: a loaded list has the same rows,
  indexes, groups and watched windows, and reports the same ops for later changes;
  round trips through `:erlang.term_to_binary/1` and a file; every truncated,
  corrupted, foreign or forged dump raises `ArgumentError`. Replay a randomized failure
  with `GUILD_KIT_SEED=<seed>`.
  """
  use ExUnit.Case, async: true
  alias GuildKit.{MemberList, SortedSet}
  alias GuildKit.Test.{Dumps, TermGenerator}

  @moduletag :tmp_dir
  @groups [{:role, 1}, {:role, 2.5}, :online, :offline]

  defp random_list(seed, members) do
    TermGenerator.seed(seed)
    list = MemberList.new(groups: @groups)

    for _ <- 1..members do
      id = Enum.random([:rand.uniform(500), :rand.uniform(500) * 1.0, {:user, :rand.uniform(50)}])
      MemberList.put(list, id, Enum.random(@groups), TermGenerator.term(1))
    end

    for _ <- 1..:rand.uniform(5), do: MemberList.remove(list, :rand.uniform(500))

    for _ <- 1..20 do
      first = :rand.uniform(300) - 1
      MemberList.watch(list, {first, first + :rand.uniform(40)})
    end

    list
  end

  defp ids(list), do: for({:member, id} <- MemberList.rows(list, 0, 1_000_000), do: id)

  defp assert_same(copy, list) do
    assert MemberList.rows(copy, 0, 1_000_000) == MemberList.rows(list, 0, 1_000_000)
    assert MemberList.size(copy) == MemberList.size(list)
    assert MemberList.member_count(copy) == MemberList.member_count(list)
    assert MemberList.groups(copy) == MemberList.groups(list)

    for id <- ids(list) ++ [:absent, 10_000] do
      assert MemberList.index_of(copy, id) == MemberList.index_of(list, id)
    end

    # The same dump: the same trees, counts and watched windows with their counts.
    assert MemberList.to_binary(copy) == MemberList.to_binary(list)
  end

  test "a loaded list is the same list, and changes as the original does" do
    seed = TermGenerator.seed!("member list dump")

    for members <- [0, 1, 50, 800] do
      list = random_list(seed + members, members)
      copy = MemberList.from_binary(MemberList.to_binary(list))
      assert_same(copy, list)

      # Windows travel: the same changes report the same ops, window by window.
      for i <- 1..40 do
        group = Enum.at(@groups, rem(i, length(@groups)))
        assert MemberList.put(copy, i, group, i) == MemberList.put(list, i, group, i)
        assert MemberList.remove(copy, i * 3) == MemberList.remove(list, i * 3)
      end

      assert_same(copy, list)
    end
  end

  test "a snapshot dumps like its list; a loaded list is writable and independent" do
    list = random_list(3, 100)
    snapshot = MemberList.snapshot(list)
    dump = MemberList.to_binary(snapshot)
    assert dump == MemberList.to_binary(list)
    copy = MemberList.from_binary(dump)
    MemberList.put(copy, :newcomer, :online, "a")
    assert MemberList.index_of(list, :newcomer) == nil
    assert is_integer(MemberList.index_of(copy, :newcomer))
  end

  test "survives :erlang.term_to_binary and a file round trip", %{tmp_dir: dir} do
    Dumps.assert_transported(MemberList, random_list(11, 400), dir, &assert_same/2)
  end

  test "every truncation point of a small dump raises ArgumentError" do
    list = MemberList.new(groups: [:online, :offline])
    MemberList.put(list, 1, :online, "a")
    MemberList.put(list, 2.0, :offline, {"b", 1.5})
    MemberList.watch(list, {0, 9})
    Dumps.assert_truncations_raise(MemberList, MemberList.to_binary(list))
  end

  test "corrupted, foreign, future and wrong-kind dumps raise ArgumentError" do
    dump = MemberList.to_binary(random_list(5, 30))
    size = byte_size(dump)
    <<head::binary-size(size - 1), last>> = dump

    assert_raise ArgumentError, ~r/corrupted dump/, fn ->
      MemberList.from_binary(head <> <<Bitwise.bxor(last, 0x40)>>)
    end

    assert_raise ArgumentError, ~r/not a GuildKit dump/, fn ->
      MemberList.from_binary(:erlang.term_to_binary(:hello))
    end

    <<magic::binary-size(8), _version::16, rest::binary>> = dump

    assert_raise ArgumentError, ~r/format version 7 is newer/, fn ->
      MemberList.from_binary(magic <> <<7::little-16>> <> rest)
    end

    set_dump = SortedSet.to_binary(SortedSet.from_enumerable([1, 2]))

    assert_raise ArgumentError,
                 ~r/a dump of a GuildKit.SortedSet, not of a GuildKit.MemberList/,
                 fn -> MemberList.from_binary(set_dump) end

    assert_raise ArgumentError,
                 ~r/a dump of a GuildKit.MemberList, not of a GuildKit.SortedSet/,
                 fn -> SortedSet.from_binary(dump) end

    assert_raise ArgumentError, ~r/expected a binary made by GuildKit.MemberList.to_binary/, fn ->
      MemberList.from_binary(:nope)
    end

    assert_raise ArgumentError, ~r/expected a GuildKit.MemberList/, fn ->
      MemberList.to_binary(SortedSet.new())
    end
  end

  test "random mutations of dumps never crash: each raises or yields a working list" do
    seed = TermGenerator.seed!("member list mutation")
    dump = MemberList.to_binary(random_list(seed, 200))

    Dumps.assert_mutations_refused(MemberList, dump, seed, 2_000, 1, fn copy ->
      assert length(MemberList.rows(copy, 0, 1_000_000)) == MemberList.size(copy)
    end)
  end
end

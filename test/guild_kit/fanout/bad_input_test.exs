defmodule GuildKit.Fanout.BadInputTest do
  # Wrong options and receivers raise ArgumentError naming the problem; nothing is sent.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout

  test "unknown options" do
    assert_raise ArgumentError,
                 "unknown keys [:send_mode] in [send_mode: :offload], the allowed keys are: [:pack, :offload, :key, :name]",
                 fn -> Fanout.send(self(), :x, send_mode: :offload) end
  end

  test "bad option values, and a key given twice" do
    assert_raise ArgumentError, "expected :pack to be :binary or false, got: :etf", fn ->
      Fanout.send(self(), :x, pack: :etf)
    end

    assert_raise ArgumentError, "expected :offload to be a boolean, got: :yes", fn ->
      Fanout.send(self(), :x, offload: :yes)
    end

    assert_raise ArgumentError, "duplicate keys [:offload] in [offload: true, offload: 1]", fn ->
      Fanout.send(self(), :x, offload: true, offload: 1)
    end

    assert_raise ArgumentError, "expected :name to be an atom, got: \"fanout\"", fn ->
      Fanout.send(self(), :x, name: "fanout")
    end

    # Delivery goes through worker processes: give a wrong send time to arrive.
    refute_receive :x, 100
  end

  test "options that are not a keyword list" do
    for opts <- [:offload, [:offload], %{offload: true}, [{"pack", :binary}]] do
      assert_raise ArgumentError,
                   "expected options to be a keyword list, got: #{inspect(opts)}",
                   fn ->
                     Fanout.send(self(), :x, opts)
                   end
    end
  end

  test "receivers that are not a pid, nil, or a list" do
    for receivers <- [:session, "pid", {self()}, 42] do
      assert_raise ArgumentError,
                   "expected receivers to be a pid, nil or a list of pids and nils, got: " <>
                     inspect(receivers),
                   fn -> Fanout.send(receivers, :x) end
    end
  end

  test "a list element that is not a pid or nil, in every mode" do
    for opts <- [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]] do
      assert_raise ArgumentError,
                   "expected receivers to be pids or nil, got: {:session, 7} at position 2",
                   fn -> Fanout.send([self(), nil, {:session, 7}], :x, opts) end
    end

    # Delivery goes through worker processes: give a wrong send time to arrive.
    refute_receive :x, 100
  end

  test "every kind of term that is not a pid is refused in the NIF walk, whatever its tag" do
    pids = for _ <- 1..100, do: spawn(fn -> Process.sleep(:infinity) end)
    port = hd(Port.list())

    # Immediates that share a pid's primary tag (a port, small integers, atoms, `[]`)
    # and boxed terms, after enough pids that the walk runs in the NIF in every mode.
    for bad <- [port, 0, 7, -1, :atom, true, [], make_ref(), 1.5, "pid", fn -> :ok end, {}],
        opts <- [[], [offload: true]] do
      assert_raise ArgumentError,
                   "expected receivers to be pids or nil, got: #{inspect(bad)} at position 100",
                   fn -> Fanout.send(pids ++ [bad, self()], :x, opts) end
    end

    refute_receive :x, 100
    Enum.each(pids, &Process.exit(&1, :kill))
  end

  test "a bad element far down a long list, past the first bounded NIF call" do
    pids = for _ <- 1..10, do: spawn(fn -> Process.sleep(:infinity) end)
    # 150,000 cells: many 8,192-receiver slices of the split, in every mode.
    long = Enum.take(Stream.cycle(pids), 150_000) ++ [:oops]

    for opts <- [[], [offload: true]] do
      assert_raise ArgumentError,
                   "expected receivers to be pids or nil, got: :oops at position 150001",
                   fn -> Fanout.send([self() | long], :x, opts) end
    end

    # Nothing was sent: the whole list is checked before anything moves.
    refute_receive :x, 100

    Enum.each(pids, &Process.exit(&1, :kill))
  end

  test "an instance that never started" do
    assert_raise ArgumentError,
                 "the GuildKit.Fanout instance NoSuchFanout is not running: add " <>
                   "{GuildKit.Fanout, name: NoSuchFanout} to a supervision tree",
                 fn -> Fanout.send(self(), :x, name: NoSuchFanout) end

    assert_raise ArgumentError, ~r/NoSuchFanout is not running/, fn ->
      Fanout.stats(NoSuchFanout)
    end
  end

  test "an improper list" do
    for opts <- [[], [offload: true]] do
      assert_raise ArgumentError, "expected a list, got an improper list", fn ->
        Fanout.send([self() | self()], :x, opts)
      end
    end
  end
end

# What a call costs when it comes after a pause, against the same call back to back.
#
#     MIX_ENV=prod mix run bench/cold_calls.exs
#
# A guild that handles an event every 20 ms runs each call "cold": the code and data it
# touches have left the CPU caches in between. This measures, for plain OTP calls and
# for GuildKit's, the first call after 20 ms of three kinds of pause and the call right
# after it (warm again):
#
#   * a spin loop in this process (the scheduler never sleeps, and the loop touches
#     next to no memory);
#   * `Process.sleep/1` (the scheduler thread may sleep);
#   * a read of a 64 MiB binary (this process evicts the caches itself: the control).
#
# If the spin loop makes calls as cold as the 64 MiB read does, the caches are emptied
# by something other than this VM's own work (on a shared host, other guests). A second
# table times the first call after spins of 0 to 20 ms, to show how long a pause it takes.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.ColdCalls do
  alias GuildKit.Bench.Harness
  alias GuildKit.{Fanout, MemberList, Relay, SortedSet}

  @rounds 200
  @pause_ms 20
  @pauses_us [0, 200, 1_000, 5_000, 20_000]
  @swept ["an empty NIF (`GuildKit.native_memory/0`)", "`SortedSet.find_index/2`, 1M"]

  def run do
    IO.puts("# Calls after a pause\n\n#{Harness.machine()} · load #{Harness.load()}\n")
    sessions = for _ <- 1..3, do: spawn(fn -> drain() end)
    set = SortedSet.from_enumerable(1..1_000_000)
    list = member_list()
    relays = relays(sessions)
    evict = :binary.copy(<<1>>, 64 * 1024 * 1024)

    calls = [
      {"`:persistent_term.get/2`", fn -> :persistent_term.get(:no_such_key, nil) end},
      {"`:ets.lookup/2`", fn -> :ets.lookup(:ac_tab, {:loaded, :kernel}) end},
      {"`Enum.map/2` over 3 pids", fn -> Enum.map(sessions, &node/1) end},
      {"3 plain `send/2`", fn -> Enum.each(sessions, &send(&1, :event)) end},
      {"an empty NIF (`GuildKit.native_memory/0`)", fn -> GuildKit.native_memory() end},
      {"`SortedSet.size/1`", fn -> SortedSet.size(set) end},
      {"`SortedSet.find_index/2`, 1M",
       fn -> SortedSet.find_index(set, :rand.uniform(1_000_000)) end},
      {"`MemberList.put/4`, 10 windows", fn -> member_put(list) end},
      {"`Fanout.send/3` to 3 pids", fn -> Fanout.send(sessions, :event) end},
      {"`Relay.dispatch/3`, 1 relay", fn -> Relay.dispatch(relays, :event) end}
    ]

    pauses = [
      {"spin", fn -> spin(@pause_ms) end},
      {"sleep", fn -> Process.sleep(@pause_ms) end},
      {"64 MiB read", fn -> :erlang.crc32(evict) end}
    ]

    rows =
      for {name, call} <- calls do
        warm = Harness.stats(for _ <- 1..@rounds, do: elem(pair(call), 1)).median

        cold =
          for {_pause, pause} <- pauses do
            samples =
              for _ <- 1..@rounds do
                pause.()
                pair(call)
              end

            first = Harness.stats(Enum.map(samples, &elem(&1, 0))).median
            second = Harness.stats(Enum.map(samples, &elem(&1, 1))).median
            "#{Harness.format_ns(first)} / #{Harness.format_ns(second)}"
          end

        [name, Harness.format_ns(warm) | cold]
      end

    Harness.table(
      [
        "call",
        "back to back",
        "after #{@pause_ms} ms spin: first / second",
        "after #{@pause_ms} ms sleep: first / second",
        "after a 64 MiB read: first / second"
      ],
      rows
    )

    IO.puts("\nmedians of #{@rounds} · load #{Harness.load()}\n")
    by_pause_length(Enum.filter(calls, fn {name, _} -> name in @swept end))
  end

  # The first call after a spin loop of each length: how long a pause it takes for the
  # caches to go cold.
  defp by_pause_length(calls) do
    rows =
      for {name, call} <- calls do
        firsts =
          for us <- @pauses_us do
            samples =
              for _ <- 1..@rounds do
                spin_until(:erlang.monotonic_time(:microsecond) + us)
                elem(pair(call), 0)
              end

            Harness.format_ns(Harness.stats(samples).median)
          end

        [name | firsts]
      end

    Harness.table(["call: first call after a spin of" | Enum.map(@pauses_us, &"#{&1} µs")], rows)
    IO.puts("\nmedians of #{@rounds} · load #{Harness.load()}")
  end

  # Times `call` twice in a row: {first, second} in ns.
  defp pair(call) do
    t0 = :erlang.monotonic_time(:nanosecond)
    call.()
    t1 = :erlang.monotonic_time(:nanosecond)
    call.()
    {t1 - t0, :erlang.monotonic_time(:nanosecond) - t1}
  end

  defp spin(ms), do: spin_until(:erlang.monotonic_time(:microsecond) + ms * 1_000)

  defp spin_until(deadline) do
    if :erlang.monotonic_time(:microsecond) < deadline, do: spin_until(deadline), else: true
  end

  defp drain do
    receive do
      _ -> drain()
    end
  end

  defp member_list do
    list = MemberList.new(groups: [:online, :offline])
    for i <- 1..10_000, do: MemberList.put(list, i, Enum.random([:online, :offline]), "n#{i}")
    for w <- 0..9, do: MemberList.watch(list, {w * 100, w * 100 + 99})
    list
  end

  defp member_put(list) do
    i = :rand.uniform(10_000)
    MemberList.put(list, i, Enum.random([:online, :offline]), "n#{:rand.uniform(10_000)}")
  end

  defp relays(sessions) do
    relays =
      sessions
      |> Enum.with_index()
      |> Enum.reduce(Relay.new(:cold_calls), fn {pid, id}, relays ->
        {:ok, relays} = Relay.connect(relays, pid, id, [], active: true)
        relays
      end)

    # The connects go out with the first dispatch: the ones timed only dispatch.
    {_seq, relays} = Relay.dispatch(relays, :connected)
    relays
  end
end

GuildKit.Bench.ColdCalls.run()

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
# A third times the parts of a cold `Fanout.send/3`: the call to one pid (which takes
# no NIF: a few receivers and a small message go over as lists), the two NIFs a longer
# list or a bigger message takes, and a plain send; once as the VM is and once with a
# process spinning in it, so that no scheduler sleeps between the calls.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.ColdCalls do
  alias GuildKit.Bench.Harness
  alias GuildKit.{Fanout, MemberList, Native, Relay, SortedSet}
  alias GuildKit.Fanout.{Runtime, Split}

  @rounds 200
  @pause_us 20_000
  @pauses_us [0, 200, 1_000, 5_000, 20_000]

  def run do
    IO.puts("# Calls after a pause\n\n#{Harness.machine()} · load #{Harness.load()}\n")
    sessions = for _ <- 1..3, do: spawn(fn -> drain() end)
    set = SortedSet.from_enumerable(1..1_000_000)
    list = member_list()
    relays = relays(sessions)
    evict = :binary.copy(<<1>>, 64 * 1024 * 1024)
    empty_nif = {"an empty NIF (`GuildKit.native_memory/0`)", fn -> GuildKit.native_memory() end}

    find_index =
      {"`SortedSet.find_index/2`, 1M",
       fn -> SortedSet.find_index(set, :rand.uniform(1_000_000)) end}

    calls = [
      {"`:persistent_term.get/2`", fn -> :persistent_term.get(:no_such_key, nil) end},
      {"`:ets.lookup/2`", fn -> :ets.lookup(:ac_tab, {:loaded, :kernel}) end},
      {"`Enum.map/2` over 3 pids", fn -> Enum.map(sessions, &node/1) end},
      {"3 plain `send/2`", fn -> Enum.each(sessions, &send(&1, :event)) end},
      empty_nif,
      {"`SortedSet.size/1`", fn -> SortedSet.size(set) end},
      find_index,
      {"`MemberList.put/4`, 10 windows", fn -> member_put(list) end},
      {"`Fanout.send/3` to 3 pids", fn -> Fanout.send(sessions, :event) end},
      {"`Relay.dispatch/3`, 1 relay", fn -> Relay.dispatch(relays, :event) end}
    ]

    pauses = [
      {"spin", fn -> spin(@pause_us) end},
      {"sleep", fn -> Process.sleep(div(@pause_us, 1_000)) end},
      {"64 MiB read", fn -> :erlang.crc32(evict) end}
    ]

    rows =
      for {name, call} <- calls do
        warm = median(for _ <- 1..@rounds, do: elem(pair(call), 1))

        cold =
          for {_pause, pause} <- pauses do
            samples =
              for _ <- 1..@rounds do
                pause.()
                pair(call)
              end

            first = median(Enum.map(samples, &elem(&1, 0)))
            second = median(Enum.map(samples, &elem(&1, 1)))
            "#{Harness.format_ns(first)} / #{Harness.format_ns(second)}"
          end

        [name, Harness.format_ns(warm) | cold]
      end

    Harness.table(
      [
        "call",
        "back to back",
        "after #{div(@pause_us, 1_000)} ms spin: first / second",
        "after #{div(@pause_us, 1_000)} ms sleep: first / second",
        "after a 64 MiB read: first / second"
      ],
      rows
    )

    IO.puts("\nmedians of #{@rounds} · load #{Harness.load()}\n")
    by_pause_length([empty_nif, find_index])
    IO.puts("")
    fanout_parts(sessions)
  end

  # The first call after a spin loop of each length: how long a pause it takes for the
  # caches to go cold.
  defp by_pause_length(calls) do
    rows =
      for {name, call} <- calls do
        [name | Enum.map(@pauses_us, &Harness.format_ns(cold(call, &1)))]
      end

    Harness.table(["call: first call after a spin of" | Enum.map(@pauses_us, &"#{&1} µs")], rows)
    IO.puts("\nmedians of #{@rounds} · load #{Harness.load()}")
  end

  # The parts of one `Fanout.send/3` to a local pid, each the first call after a 20 ms
  # spin: as the VM is, and with a process spinning beside this one, which keeps every
  # scheduler awake (this process spins too), so that a send wakes none.
  defp fanout_parts([receiver | _]) do
    workers = Runtime.fetch!(Fanout).workers

    parts = [
      {"`Fanout.send/3` to 1 pid (no NIF)", fn -> Fanout.send([receiver], :event) end},
      {"the split NIF of longer lists (`Native.fanout_split/2`)",
       fn -> Split.split([receiver], workers) end},
      {"the message NIF of bigger messages (`Native.fanout_message/1`)",
       fn -> Native.fanout_message(:event) end},
      {"a plain `send/2` to that pid", fn -> send(receiver, :event) end}
    ]

    rows =
      for {name, call} <- parts do
        alone = cold(call, @pause_us)
        spinner = spawn(fn -> spin(:infinity) end)
        beside = cold(call, @pause_us)
        Process.exit(spinner, :kill)
        [name, Harness.format_ns(alone), Harness.format_ns(beside)]
      end

    Harness.table(
      ["part: first call after a 20 ms spin", "as is", "beside a spinning process"],
      rows
    )

    IO.puts("\nmedians of #{@rounds} · load #{Harness.load()}")
  end

  # The median first call after a spin of `us` microseconds.
  defp cold(call, us) do
    median(
      for _ <- 1..@rounds do
        spin(us)
        elem(pair(call), 0)
      end
    )
  end

  defp median(samples), do: Harness.stats(samples).median

  # Times `call` twice in a row: {first, second} in ns.
  defp pair(call) do
    t0 = :erlang.monotonic_time(:nanosecond)
    call.()
    t1 = :erlang.monotonic_time(:nanosecond)
    call.()
    {t1 - t0, :erlang.monotonic_time(:nanosecond) - t1}
  end

  # Spins for `us` microseconds (or for ever, with `:infinity`) without touching memory.
  defp spin(:infinity), do: spin(:infinity)
  defp spin(us), do: spin_until(:erlang.monotonic_time(:microsecond) + us)

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

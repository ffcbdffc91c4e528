# The floor under "every active session has the event": how long until the last of
# `active` session processes of this node has one small message, when nothing but
# plain `send/2` loops deliver it. Run with:
#
#     MIX_ENV=prod mix run bench/delivery_floor.exs [--events 200]
#
# No guild, relay, permission check, peer node or passive update takes part: two sender
# processes (each serving half of the sessions) send `{:event, seq, sent_at}` to every
# session, `--events` times at 20 and at 50 events a second (the rate of
# bench/relay.exs). The figure is the time until the last session had the event, as
# the "delivery" column of bench/relay.exs, recorded in :atomics in two ways (see
# `recorder/4`): the cheapest, and the one bench/relay.exs and `make demo` use. With
# 180,000 more idle processes beside them, the run has the process count of the
# 200,000-session runs of bench/relay.exs and of `make demo`.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.DeliveryFloor do
  alias GuildKit.Bench.Harness

  # Two senders use both cores; one was measured no faster.
  @senders 2

  def run(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [events: :integer])
    events = Keyword.get(opts, :events, 200)
    IO.puts("# Delivery floor · #{Harness.machine()}\n")
    IO.puts("Load average before: #{Harness.load()}\n")

    rows =
      for rate <- [20, 50],
          {active, idle} <- [{2_000, 0}, {20_000, 0}, {20_000, 180_000}],
          recorder <- [:count, :shared_max] do
        stats = measure(active, idle, recorder, events, div(1000, rate))

        [
          Integer.to_string(rate),
          Integer.to_string(active),
          Integer.to_string(idle),
          Atom.to_string(recorder),
          Harness.format_ns(stats.median),
          Harness.format_ns(stats.p99),
          Harness.format_ns(stats.max)
        ]
      end

    Harness.table(
      ["events/s", "active sessions", "idle processes", "recorder", "median", "p99", "max"],
      rows
    )

    IO.puts("\nLoad average after: #{Harness.load()}")
  end

  defp measure(active, idle, recorder, events, gap_ms) do
    received = :atomics.new(events, signed: false)
    slowest = :atomics.new(events, signed: false)
    record = recorder(recorder, received, slowest, active)
    sessions = for _ <- 1..active, do: spawn(fn -> session(record) end)
    idlers = for _ <- 1..idle//1, do: spawn(fn -> receive do: (:stop -> :ok) end)

    shares =
      for share <- Enum.chunk_every(sessions, div(active + @senders - 1, @senders)),
          do: {spawn(&sender/0), share}

    Process.sleep(500)

    start = System.monotonic_time(:millisecond)

    for seq <- 1..events do
      event = {:event, seq, :os.perf_counter(:nanosecond)}
      for {sender, share} <- shares, do: send(sender, {:send, share, event})
      # On the clock, as bench/relay.exs paces its events: a late event is not made up
      # for by a longer gap after it.
      Process.sleep(max(start + seq * gap_ms - System.monotonic_time(:millisecond), 0))
    end

    Process.sleep(500)
    delays = for seq <- 1..events, do: :atomics.get(slowest, seq)
    Enum.each(sessions ++ idlers, &Process.exit(&1, :kill))
    Enum.each(shares, fn {sender, _} -> Process.exit(sender, :kill) end)
    Harness.stats(delays)
  end

  defp sender do
    receive do
      {:send, sessions, event} ->
        Enum.each(sessions, &send(&1, event))
        sender()
    end
  end

  defp session(record) do
    receive do
      {:event, seq, sent_at} ->
        record.(seq, max(:os.perf_counter(:nanosecond) - sent_at, 1))
        session(record)
    end
  end

  # `:count`: the session whose receipt completes an event's count is the last to have
  # it, and records its delay (one atomic add a session). `:shared_max`: every session
  # raises the event's slot to its delay if larger, as the sessions of bench/relay.exs
  # and `make demo` do (a read and, mostly, a compare-exchange a session, all on one
  # cache line that both cores write).
  defp recorder(:count, received, slowest, active) do
    fn seq, ns ->
      if :atomics.add_get(received, seq, 1) == active, do: :atomics.put(slowest, seq, ns)
    end
  end

  defp recorder(:shared_max, _received, slowest, _active),
    do: fn seq, ns -> raise_to(slowest, seq, ns, :atomics.get(slowest, seq)) end

  defp raise_to(_slowest, _seq, ns, current) when ns <= current, do: :ok

  defp raise_to(slowest, seq, ns, current) do
    case :atomics.compare_exchange(slowest, seq, current, ns) do
      :ok -> :ok
      actual -> raise_to(slowest, seq, ns, actual)
    end
  end
end

GuildKit.Bench.DeliveryFloor.run(System.argv())

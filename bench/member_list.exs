# GuildKit.MemberList on a 1,000,000-member sidebar, against the naive approach.
#
#     MIX_ENV=prod mix run bench/member_list.exs [MEMBERS]
#
# 10 hoisted roles (5% of members), online (30%) and offline (65%); 1,000 watched
# 100-row ranges, 500 of them on the ten windows at the top of the list ({0, 99} ...
# {900, 999}). The other 500 are placed two ways, each measured:
#   - scattered: random windows anywhere in the list (users scrolled anywhere);
#   - clustered: random windows in the first 20,000 rows (users scrolled a few pages).
# A presence change moves a random member between online and offline (90%) or to another
# role (10%), and includes computing every range's ops and building them as terms.
#
# The naive approach is what a guild writes without MemberList: a GuildKit.SortedSet of
# {group, name, id}, index_remove and index_add to find the old and new index, then a full
# SYNC (a 100-row slice) of every watched range the move touched.
#
# Both run in the same VM on the same changes, in interleaved rounds (MemberList first in
# odd rounds, the naive set first in even ones), and the load average is printed before
# and after. The cost per touched window is, over the moves that touched any, the median
# of (time - the median move with no window watched) / windows touched.
# Snapshots: the time of `snapshot/1`, and of the first write after one.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.MemberList do
  alias GuildKit.Bench.Harness
  alias GuildKit.{MemberList, SortedSet}

  @roles for r <- 1..10, do: {:role, r}
  @groups @roles ++ [:online, :offline]
  @rounds 10
  @per_round 1_000

  def run(members) do
    IO.puts("# GuildKit.MemberList · #{Harness.machine()}\n")
    load_before = Harness.load()
    result = Harness.in_big_process(fn -> measure(members) end, 200_000_000)
    report(result, members, load_before, Harness.load())
  end

  defp measure(n) do
    :rand.seed(:exsss, {n, 3, 5})
    say("generating #{n} members")
    people = for id <- 1..n, do: {100_000_000_000_000_000 + id * 7_919, group(), name()}
    positions = Map.new(Enum.with_index(@groups))

    say("building the member list")
    list = MemberList.new(groups: @groups)

    {build_us, _} =
      :timer.tc(fn -> for {id, g, name} <- people, do: MemberList.put(list, id, g, name) end)

    say("building the naive sorted set")
    naive = SortedSet.from_enumerable(for {id, g, name} <- people, do: {positions[g], name, id})

    memory = MemberList.memory(list)
    by_id = Map.new(people, fn {id, g, name} -> {id, {g, name}} end)

    say("bare moves (no window watched)")
    bare_moves = presence_changes(people, by_id, 2_000)

    bare =
      Harness.per_call(bare_moves, fn {id, _, {g, name}} -> MemberList.put(list, id, g, name) end)

    undo(list, bare_moves)

    scenarios =
      for {scenario, spread} <- [scattered: n, clustered: 20_000] do
        ranges = for(_ <- 1..500, do: top_window()) ++ for(_ <- 1..500, do: random_window(spread))
        Enum.each(ranges, &MemberList.watch(list, &1))
        distinct = ranges |> Enum.uniq() |> Enum.sort()
        say("#{scenario}: #{@rounds} interleaved rounds of #{@per_round} presence changes")

        rounds =
          for round <- 1..@rounds do
            moves = presence_changes(people, by_id, @per_round)
            ours = fn -> time_moves(list, moves) end
            theirs = fn -> time_naive(naive, positions, distinct, moves) end

            {ours, theirs} =
              if rem(round, 2) == 1 do
                {ours.(), theirs.()}
              else
                theirs = theirs.()
                {ours.(), theirs}
              end

            undo(list, moves)
            {ours, theirs}
          end

        Enum.each(ranges, &MemberList.unwatch(list, &1))
        samples = Enum.flat_map(rounds, &elem(&1, 0))
        naive_ns = Enum.flat_map(rounds, &elem(&1, 1))

        {scenario,
         %{
           put: Harness.stats(Enum.map(samples, &elem(&1, 0))),
           touched: Harness.stats(Enum.map(samples, &elem(&1, 1))),
           per_window: per_window(samples, bare.median),
           naive: Harness.stats(naive_ns),
           distinct: length(distinct)
         }}
      end

    say("timing watch of 100-row windows")
    windows = for _ <- 1..5_000, do: random_window(n)
    watch = Harness.per_call(windows, &MemberList.watch(list, &1))
    Enum.each(windows, &MemberList.unwatch(list, &1))

    say("timing snapshots and the first write after one")
    snapshot = Harness.repeat(200, fn -> MemberList.snapshot(list) end)
    # Each snapshot is kept alive across the put, so the put copies what it shares.
    first_write =
      Harness.stats(
        for {id, _, {g, name}} <- presence_changes(people, by_id, 200) do
          snapshot = MemberList.snapshot(list)
          t0 = System.monotonic_time(:nanosecond)
          MemberList.put(list, id, g, name)
          ns = System.monotonic_time(:nanosecond) - t0
          MemberList.size(snapshot)
          ns
        end
      )

    say("timing puts while another process reads every row")
    {full_read_us, _} = :timer.tc(fn -> MemberList.rows(list, 0, n + 100) end)
    during_read = puts_during_reads(list, n, presence_changes(people, by_id, 200))

    %{
      build_us: build_us,
      memory: memory,
      bare: bare,
      scenarios: scenarios,
      watch: watch,
      snapshot: snapshot,
      first_write: first_write,
      full_read_us: full_read_us,
      during_read: during_read
    }
  end

  # Times `moves` (put back afterwards) while a reader process reads the whole list with
  # `rows/3` over and over: rows are decoded from a snapshot outside the lock, so no put
  # waits for a read.
  defp puts_during_reads(list, n, moves) do
    parent = self()

    {reader, ref} =
      :erlang.spawn_opt(
        fn ->
          send(parent, :reading)
          read_until_stopped(list, n, 0)
        end,
        [:monitor, min_heap_size: 20_000_000]
      )

    receive do: (:reading -> :ok)
    # Let the first read get going.
    Process.sleep(5)

    samples =
      for {id, _, {g, name}} <- moves do
        t0 = System.monotonic_time(:nanosecond)
        MemberList.put(list, id, g, name)
        ns = System.monotonic_time(:nanosecond) - t0
        # Spread the puts over several reads.
        Process.sleep(1)
        ns
      end

    send(reader, :stop)
    reads = receive do: ({:DOWN, ^ref, :process, ^reader, {:reads, reads}} -> reads)
    undo(list, moves)
    Map.put(Harness.stats(samples), :reads, reads)
  end

  defp read_until_stopped(list, n, reads) do
    receive do
      :stop -> exit({:reads, reads})
    after
      0 ->
        MemberList.rows(list, 0, n + 100)
        read_until_stopped(list, n, reads + 1)
    end
  end

  # What a touched window adds to a move: over the moves that touched any, the median of
  # (time - the median move that touches none) / windows touched. A median, not a
  # least-squares slope: on a busy machine a few preempted moves would dominate a fit.
  defp per_window(samples, bare_ns) do
    costs = for {t, w} <- samples, w > 0, do: (t - bare_ns) / w
    if costs == [], do: 0.0, else: Harness.stats(costs).median
  end

  defp time_moves(list, moves) do
    for {id, _old, {g, name}} <- moves do
      t0 = System.monotonic_time(:nanosecond)
      changes = MemberList.put(list, id, g, name)
      {System.monotonic_time(:nanosecond) - t0, length(changes)}
    end
  end

  # The naive guild: a SortedSet of {group, name, id}, the old and new index from
  # index_remove and index_add, then a full SYNC of every watched range between them.
  defp time_naive(naive, positions, distinct, moves) do
    times =
      for {id, {og, oname}, {g, name}} <- moves do
        t0 = System.monotonic_time(:nanosecond)
        {from, _} = SortedSet.index_remove(naive, {positions[og], oname, id})
        {to, _} = SortedSet.index_add(naive, {positions[g], name, id})
        {low, high} = {min(from, to), max(from, to)}

        for {first, last} <- distinct, first <= high and last >= low do
          SortedSet.slice(naive, first, last - first + 1)
        end

        System.monotonic_time(:nanosecond) - t0
      end

    Enum.each(Enum.reverse(moves), fn {id, {og, oname}, {g, name}} ->
      SortedSet.remove(naive, {positions[g], name, id})
      SortedSet.add(naive, {positions[og], oname, id})
    end)

    times
  end

  # Puts everyone back, so that every round starts from the same list.
  defp undo(list, moves) do
    Enum.each(Enum.reverse(moves), fn {id, {g, name}, _} -> MemberList.put(list, id, g, name) end)
  end

  defp say(message), do: IO.puts(:stderr, "  · " <> message)

  defp group do
    case :rand.uniform(100) do
      r when r <= 5 -> Enum.random(@roles)
      r when r <= 35 -> :online
      _ -> :offline
    end
  end

  @syllables ~w(ka ri to mi na so ha lu en do ra vi ze mo qu ty ar el is on)
  defp name, do: for(_ <- 1..(2 + :rand.uniform(3)), into: "", do: Enum.random(@syllables))

  defp top_window do
    first = (:rand.uniform(10) - 1) * 100
    {first, first + 99}
  end

  defp random_window(n) do
    first = (:rand.uniform(div(n, 100)) - 1) * 100
    {first, first + 99}
  end

  # {id, old {group, name}, new {group, name}}: each a change of the original list.
  defp presence_changes(people, by_id, count) do
    ids = people |> Enum.map(&elem(&1, 0)) |> List.to_tuple()

    for _ <- 1..count do
      id = elem(ids, :rand.uniform(tuple_size(ids)) - 1)
      {g, name} = old = Map.fetch!(by_id, id)

      new_group =
        case {g, :rand.uniform(10)} do
          {_, 1} -> Enum.random(@roles)
          {:online, _} -> :offline
          {:offline, _} -> :online
          {{:role, _}, _} -> Enum.random([:online, :offline])
        end

      {id, old, {new_group, name}}
    end
  end

  defp report(r, n, load_before, load_after) do
    rows =
      Enum.flat_map(r.scenarios, fn {scenario, m} ->
        [
          [
            "#{scenario}: presence change incl. ops, median",
            Harness.format_ns(m.put.median),
            Harness.format_ns(m.naive.median),
            "#{Float.round(m.naive.median / m.put.median, 1)}×"
          ],
          [
            "#{scenario}: presence change incl. ops, p99",
            Harness.format_ns(m.put.p99),
            Harness.format_ns(m.naive.p99),
            "#{Float.round(m.naive.p99 / m.put.p99, 1)}×"
          ],
          [
            "#{scenario}: per touched window (median, beyond a bare move)",
            Harness.format_ns(m.per_window),
            "",
            ""
          ]
        ]
      end) ++
        [
          ["move with no window watched, median", Harness.format_ns(r.bare.median), "", ""],
          ["watch of a 100-row window, median", Harness.format_ns(r.watch.median), "", ""],
          ["watch of a 100-row window, p99", Harness.format_ns(r.watch.p99), "", ""],
          ["snapshot/1, median", Harness.format_ns(r.snapshot.median), "", ""],
          ["snapshot/1, p99", Harness.format_ns(r.snapshot.p99), "", ""],
          ["first put after a snapshot, median", Harness.format_ns(r.first_write.median), "", ""],
          ["first put after a snapshot, p99", Harness.format_ns(r.first_write.p99), "", ""],
          ["rows/3 of the whole list", Harness.format_ns(r.full_read_us * 1_000), "", ""],
          [
            "put during whole-list rows/3 in another process, median",
            Harness.format_ns(r.during_read.median),
            "",
            ""
          ],
          [
            "put during whole-list rows/3 in another process, max",
            Harness.format_ns(r.during_read.max),
            "",
            ""
          ]
        ]

    Harness.table(["measure", "GuildKit.MemberList", "naive (SortedSet + SYNC)", "ratio"], rows)
    IO.puts("")

    for {scenario, m} <- r.scenarios do
      IO.puts(
        "#{scenario}: #{m.distinct} distinct watched ranges (1,000 watches); windows with ops per change: " <>
          "median #{m.touched.median}, p99 #{m.touched.p99}, mean #{Float.round(m.touched.mean, 1)}."
      )
    end

    IO.puts("""
    Load average before: #{load_before}; after: #{load_after}.
    Native memory: #{Float.round(r.memory / n, 1)} bytes per member (#{n} members).
    Building by #{n} puts: #{div(r.build_us, 1000)} ms.
    Puts during reads: #{r.during_read.n} puts while another process made #{r.during_read.reads} whole-list reads.
    """)
  end
end

members =
  case System.argv() do
    [] -> 1_000_000
    [n] -> String.to_integer(n)
  end

GuildKit.Bench.MemberList.run(members)

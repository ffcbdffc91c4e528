# GuildKit.Permissions and GuildKit.Audience on one relay's sessions, against Elixir.
#
#     MIX_ENV=prod mix run bench/permissions.exs [SESSIONS] [ACTIVE_PERCENT]
#
# 15,000 sessions (default), 100 roles, 50 channels with 0-10 overwrites each, members
# with 0-5 roles, every session active by default (so a select returns the most pids).
# @everyone may view; a role in ten denies it, and channels deny @everyone or some roles
# and allow others or a member, so about half the sessions see a typical channel.
#
# Measured:
#   - select with a channel filter once cached, against an Enum.filter that computes
#     each session's permission in Elixir (with each channel's overwrites in maps, as
#     an Elixir relay would keep them), in the same run;
#   - the first select after a change: one role's bits, a channel's overwrites,
#     @everyone, and one member's roles;
#   - Permissions.compute/4 for one member;
#   - native memory per session (15,000 sessions, the 50 channels cached).

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.Permissions do
  import Bitwise
  alias GuildKit.Bench.Harness
  alias GuildKit.{Audience, Permissions}

  @view 0x400
  @send 0x800
  @roles 100
  @channels 50

  def run(sessions, active_percent) do
    IO.puts("# GuildKit.Permissions and GuildKit.Audience · #{Harness.machine()}\n")
    IO.puts("load: #{Harness.load()}\n")
    Harness.in_big_process(fn -> measure(sessions, active_percent) end, 100_000_000)
  end

  defp measure(n, active_percent) do
    :rand.seed(:exsss, {n, 11, 13})
    roles = for r <- 1..@roles, into: %{}, do: {r, role_bits(r)}

    channels =
      for c <- 1..@channels, into: %{} do
        {c, for(_ <- 1..(:rand.uniform(11) - 1), do: overwrite(n))}
      end

    perms = Permissions.new(everyone: @view, roles: roles, owner: 1, channels: channels)

    people =
      for id <- 1..n do
        roles = Enum.take_random(1..@roles, :rand.uniform(6) - 1)

        {spawn(fn -> receive do: (:stop -> :ok) end), id, roles,
         :rand.uniform(100) <= active_percent}
      end

    memory_before = settled_native_memory()
    audience = Audience.new()

    {add_us, _} =
      :timer.tc(fn ->
        for {pid, id, r, a} <- people, do: Audience.add(audience, pid, id, r, active: a)
      end)

    # Cache every channel once, then time cached selects on random channels.
    for c <- 1..@channels, do: Audience.select(audience, perms, {:channel, c})
    memory = settled_native_memory() - memory_before
    role_count = Enum.sum(for {_, _, r, _} <- people, do: length(r))

    picks = for _ <- 1..2_000, do: :rand.uniform(@channels)

    # Selects are timed in a process with a default heap, as a relay's: in the big
    # process, every new list would land on never-touched pages of its huge heap.
    cached =
      in_plain_process(fn ->
        Harness.per_call(picks, &Audience.select(audience, perms, {:channel, &1}))
      end)

    selected = selected_estimate(audience, perms)
    length = round(selected)

    list_floor =
      in_plain_process(fn -> Harness.per_call(picks, fn _ -> :lists.seq(1, length) end) end)

    elixir = elixir_filter(roles, channels, people)
    baseline = Harness.per_call(Enum.take(picks, 30), &elixir.(&1))
    check!(audience, perms, elixir, people)

    after_role =
      first_select_after(audience, 100, fn i ->
        {Permissions.put_role(
           perms,
           :rand.uniform(@roles),
           Enum.random([0, @send, @view ||| @send, i])
         ), :rand.uniform(@channels)}
      end)

    after_channel =
      first_select_after(audience, 100, fn i ->
        c = :rand.uniform(@channels)

        {Permissions.put_channel(
           perms,
           c,
           [{:everyone, 0, @view} | channels[c]] ++ [{:member, i, @view, 0}]
         ), c}
      end)

    after_everyone =
      first_select_after(audience, 100, fn i ->
        {Permissions.put_everyone(perms, @view ||| i <<< 20), :rand.uniform(@channels)}
      end)

    Audience.select(audience, perms, {:channel, 1})

    after_member =
      in_plain_process(fn ->
        Harness.per_call(Enum.take_random(people, 200), fn {_pid, id, _roles, _} ->
          Audience.update_member(audience, id, Enum.take_random(1..@roles, :rand.uniform(6) - 1))
          Audience.select(audience, perms, {:channel, 1})
        end)
      end)

    lookups =
      for _ <- 1..20_000 do
        {_pid, id, r, _} = Enum.random(people)
        {id, r, :rand.uniform(@channels)}
      end

    compute = Harness.per_call(lookups, fn {id, r, c} -> Permissions.compute(perms, id, r, c) end)

    Enum.each(people, fn {pid, _, _, _} -> send(pid, :stop) end)

    report(%{
      sessions: n,
      active_percent: active_percent,
      selected: selected,
      cached: cached,
      list_floor: list_floor,
      baseline: baseline,
      after_role: after_role,
      after_channel: after_channel,
      after_everyone: after_everyone,
      after_member: after_member,
      compute: compute,
      add_us: add_us,
      memory: memory,
      audience_memory: Audience.memory(audience),
      role_count: role_count
    })
  end

  # Ten roles deny viewing, the rest grant sending now and then.
  defp role_bits(r) when rem(r, 10) == 0, do: 0x2000
  defp role_bits(r) when rem(r, 3) == 0, do: @send
  defp role_bits(_), do: 0

  defp overwrite(n) do
    case :rand.uniform(10) do
      1 -> {:everyone, 0, @view}
      2 -> {:everyone, @send, 0}
      k when k <= 6 -> {:role, :rand.uniform(@roles), 0, @view}
      k when k <= 9 -> {:role, :rand.uniform(@roles), @view, 0}
      _ -> {:member, :rand.uniform(n), @view, 0}
    end
  end

  # What a relay written in Elixir does per event: each session's permission in the
  # channel, from the role map and the channel's overwrites kept in maps.
  defp elixir_filter(roles, channels, people) do
    compiled =
      Map.new(channels, fn {c, overwrites} ->
        everyone =
          for {:everyone, a, d} <- overwrites,
              reduce: {0, 0},
              do: ({aa, dd} -> {aa ||| a, dd ||| d})

        by_role =
          for {:role, r, a, d} <- overwrites, reduce: %{} do
            acc -> Map.update(acc, r, {a, d}, fn {aa, dd} -> {aa ||| a, dd ||| d} end)
          end

        by_member =
          for {:member, m, a, d} <- overwrites, reduce: %{} do
            acc -> Map.update(acc, m, {a, d}, fn {aa, dd} -> {aa ||| a, dd ||| d} end)
          end

        {c, {everyone, by_role, by_member}}
      end)

    fn channel ->
      {{ea, ed}, by_role, by_member} = Map.fetch!(compiled, channel)

      Enum.filter(people, fn {_pid, id, held, active} ->
        active and
          (id == 1 or
             (
               base = Enum.reduce(held, @view, fn r, acc -> acc ||| Map.get(roles, r, 0) end)

               if (base &&& 0x8) != 0 do
                 true
               else
                 p = (base &&& bnot(ed)) ||| ea

                 {ra, rd} =
                   Enum.reduce(held, {0, 0}, fn r, {aa, dd} ->
                     case by_role do
                       %{^r => {a, d}} -> {aa ||| a, dd ||| d}
                       _ -> {aa, dd}
                     end
                   end)

                 p = (p &&& bnot(rd)) ||| ra

                 p =
                   case by_member do
                     %{^id => {a, d}} -> (p &&& bnot(d)) ||| a
                     _ -> p
                   end

                 (p &&& @view) == @view
               end
             ))
      end)
    end
  end

  defp check!(audience, perms, elixir, people) do
    for c <- 1..@channels do
      expected = for {pid, _, _, _} <- elixir.(c), do: pid
      got = Audience.select(audience, perms, {:channel, c})

      unless Enum.sort(got) == Enum.sort(expected) do
        raise "channel #{c}: the audience and the Elixir filter disagree"
      end
    end

    length(people)
  end

  # Each sample: make the change (not timed), then time the first select with it.
  defp first_select_after(audience, times, change) do
    in_plain_process(fn ->
      samples =
        for i <- 1..times do
          {perms, channel} = change.(i)
          t0 = :erlang.monotonic_time(:nanosecond)
          Audience.select(audience, perms, {:channel, channel})
          :erlang.monotonic_time(:nanosecond) - t0
        end

      Harness.stats(samples)
    end)
  end

  defp in_plain_process(fun) do
    task = Task.async(fun)
    Task.await(task, :infinity)
  end

  defp selected_estimate(audience, perms) do
    Enum.sum(for c <- 1..@channels, do: Audience.count(audience, perms, {:channel, c})) /
      @channels
  end

  defp settled_native_memory do
    Process.sleep(50)
    GuildKit.native_memory()
  end

  defp report(r) do
    f = &Harness.format_ns/1
    ratio = r.baseline.median / r.cached.median
    per_session = r.memory / r.sessions
    budget = 64 + 8 * r.role_count / r.sessions

    IO.puts(
      "#{r.sessions} sessions (#{r.active_percent}% active), #{@roles} roles, #{@channels} channels; " <>
        "a channel select returns #{round(r.selected)} pids on average\n"
    )

    Harness.table(["measure", "median", "p99", "target"], [
      ["select, channel filter, cached", f.(r.cached.median), f.(r.cached.p99), "<= 50 µs"],
      ["Enum.filter computing each permission", f.(r.baseline.median), f.(r.baseline.p99), ""],
      [
        ":lists.seq/2 of as many integers, for scale",
        f.(r.list_floor.median),
        f.(r.list_floor.p99),
        ""
      ],
      ["speed-up of the cached select", "#{Float.round(ratio, 1)}x", "", ">= 20x"],
      [
        "first select after a role's bits change",
        f.(r.after_role.median),
        f.(r.after_role.max) <> " (max)",
        "<= 2 ms"
      ],
      [
        "first select after a channel's overwrites change",
        f.(r.after_channel.median),
        f.(r.after_channel.max) <> " (max)",
        "<= 2 ms"
      ],
      [
        "first select after @everyone changes",
        f.(r.after_everyone.median),
        f.(r.after_everyone.max) <> " (max)",
        "<= 2 ms"
      ],
      ["update_member + first select", f.(r.after_member.median), f.(r.after_member.p99), ""],
      ["Permissions.compute/4", f.(r.compute.median), f.(r.compute.p99), "<= 2 µs"]
    ])

    IO.puts("")

    Harness.table(["memory", "value", "target"], [
      [
        "native bytes per session (GuildKit.native_memory/0)",
        Float.round(per_session, 1),
        "<= #{Float.round(budget, 1)} (64 + 8 × #{Float.round(r.role_count / r.sessions, 2)} roles)"
      ],
      ["Audience.memory/1 per session", Float.round(r.audience_memory / r.sessions, 1), ""],
      ["adding the sessions", f.(r.add_us * 1000), ""]
    ])
  end
end

{sessions, active} =
  case System.argv() do
    [s, a] -> {String.to_integer(s), String.to_integer(a)}
    [s] -> {String.to_integer(s), 100}
    [] -> {15_000, 100}
  end

GuildKit.Bench.Permissions.run(sessions, active)

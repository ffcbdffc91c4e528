defmodule GuildKit.Examples.GuildSoakTest do
  @moduledoc """
  The example guild under load, with faults: sessions crash and rejoin, a peer node with
  sessions on it is stopped mid-run, and fan-out workers are killed. The guild keeps
  serving, every surviving active session gets every event in order with a correct
  copy of its window, and the sidebar equals one rebuilt from the event log.
  """
  use ExUnit.Case, async: false

  alias GuildKit.Examples.{Demo, Guild, PeerNode, Session}
  alias GuildKit.Fanout.Runtime

  @moduletag :slow
  @moduletag timeout: 300_000

  @roles [:admin, :mod, :vip]
  @windows [{0, 49}, {50, 99}, {100, 199}, {500, 599}]
  @members 20_000
  @seconds 8

  for toolkit <- [:relay, :guild_kit] do
    test "#{toolkit}: keeps serving through crashes, a lost node and killed workers" do
      soak(unquote(toolkit))
    end
  end

  defp soak(toolkit) do
    seed = :erlang.phash2(make_ref())
    :rand.seed(:exsss, {seed, 1, 2})
    IO.puts("soak seed: #{seed}")

    [keep, lose] = PeerNode.start_many(2)
    initial = for id <- 1..@members, do: {id, member(id)}

    perms =
      GuildKit.Permissions.new(everyone: 0x400) |> GuildKit.Permissions.put_channel(:general, [])

    {:ok, guild} =
      Guild.start_link(
        toolkit: toolkit,
        hoisted_roles: @roles,
        members: initial,
        permissions: perms
      )

    local = for id <- 1..300, do: {id, start_session(guild, id)}
    kept = start_remote_sessions(keep.node, guild, 301..500)
    _lost = start_remote_sessions(lose.node, guild, 501..700)

    # The crashes stop before the stream does, so every rejoined session sees events.
    crasher = Task.async(fn -> crash_and_rejoin(guild, local, @seconds * 800) end)
    log = drive(guild, @seconds * 1_000, %{lose: lose})
    local = Task.await(crasher, 60_000)

    # The guild still serves, and its sidebar is the one the event log describes.
    last_seq = length(log)
    expected = rebuild(Map.new(initial), log)
    assert Guild.rows(guild, 0, @members * 2) == expected

    survivors = Enum.map(local, &elem(&1, 1)) ++ kept

    active =
      for {pid, window} <- survivors, window, do: {window, await_report(pid, last_seq, 300)}

    assert length(active) > 100

    for {{first, last} = window, report} <- active do
      assert report.gaps == 0, "a session of #{inspect(window)} missed or reordered events"

      assert report.last_seq == last_seq,
             "a session of #{inspect(window)} stopped at #{report.last_seq}"

      assert report.events == last_seq - report.first_seq + 1
      assert report.rows == Enum.slice(expected, first..last)
    end

    PeerNode.stop(keep)
  end

  defp member(id) do
    roles = if rem(id, 25) == 0, do: [Enum.at(@roles, rem(id, 3))], else: []

    %{
      name: "user#{rem(id * 7_919, 5_003)}",
      roles: roles,
      status: if(id <= 2_000, do: :online, else: :offline)
    }
  end

  defp start_session(guild, id) do
    window = window_for(id)
    {:ok, pid} = Session.start(guild, id, watch: window)
    {pid, window}
  end

  defp start_remote_sessions(node, guild, ids) do
    specs = Enum.map(ids, &{&1, window_for(&1)})
    :erpc.call(node, Demo, :start_local_sessions, [guild, specs], 60_000).sessions
  end

  # One in three sessions is active.
  defp window_for(id), do: if(rem(id, 3) == 0, do: Enum.at(@windows, rem(id, length(@windows))))

  # A session's report once it has seen the last event (or the last try's report).
  defp await_report(pid, last_seq, tries) do
    report = Session.report(pid)

    if report.last_seq == last_seq or tries == 0 do
      report
    else
      Process.sleep(100)
      await_report(pid, last_seq, tries - 1)
    end
  end

  # Every 100 ms a random local session is killed and its user connects again. Returns
  # the local sessions as they are at the end.
  defp crash_and_rejoin(guild, sessions, ms) do
    deadline = System.monotonic_time(:millisecond) + ms
    crash_loop(guild, Map.new(sessions), deadline)
  end

  defp crash_loop(guild, sessions, deadline) do
    if System.monotonic_time(:millisecond) > deadline do
      Enum.to_list(sessions)
    else
      Process.sleep(100)
      {id, {pid, _window}} = Enum.random(sessions)
      Process.exit(pid, :kill)
      crash_loop(guild, Map.put(sessions, id, start_session(guild, id)), deadline)
    end
  end

  # Applies random events for `ms`; stops the lost peer at 40% and kills the fan-out
  # workers at 60% of the run. Returns the events applied, in order.
  defp drive(guild, ms, context) do
    start = System.monotonic_time(:millisecond)

    drive_loop(
      guild,
      %{start: start, ms: ms, next_id: @members + 1, log: [], lost?: false, killed?: false},
      context
    )
  end

  defp drive_loop(guild, run, context) do
    elapsed = System.monotonic_time(:millisecond) - run.start

    cond do
      elapsed >= run.ms ->
        Enum.reverse(run.log)

      not run.lost? and elapsed >= run.ms * 0.4 ->
        PeerNode.stop(context.lose)
        drive_loop(guild, %{run | lost?: true}, context)

      not run.killed? and elapsed >= run.ms * 0.6 ->
        workers =
          Process.whereis(Runtime.partitioner_name(0)) |> :sys.get_state() |> Map.fetch!(:workers)

        workers |> Tuple.to_list() |> Enum.each(&Process.exit(&1, :kill))
        drive_loop(guild, %{run | killed?: true}, context)

      true ->
        {events, next_id} = Enum.map_reduce(1..5, run.next_id, &random_event/2)
        :ok = Guild.apply_events(guild, events)
        Process.sleep(10)
        drive_loop(guild, %{run | next_id: next_id, log: Enum.reverse(events, run.log)}, context)
    end
  end

  defp random_event(_, next_id) do
    id = :rand.uniform(@members)

    case :rand.uniform(11) do
      11 -> {{:message, id, :general, [:rand.uniform(@members)]}, next_id}
      n when n <= 6 -> {{:presence, id, Enum.random([:online, :offline])}, next_id}
      7 -> {{:roles, id, Enum.take_random(@roles, :rand.uniform(2) - 1)}, next_id}
      8 -> {{:join, next_id, "new#{next_id}", []}, next_id + 1}
      _ -> {{:leave, id}, next_id}
    end
  end

  # The oracle: the members after the log, laid out as the sidebar shows them.
  defp rebuild(members, log) do
    members = Enum.reduce(log, members, &apply_logged/2)

    placed =
      for {id, member} <- members do
        group =
          if member.status == :offline,
            do: :offline,
            else: Enum.find(@roles, :online, &(&1 in member.roles))

        {group, member.name, id}
      end

    for group <- @roles ++ [:online, :offline],
        in_group = placed |> Enum.filter(&(elem(&1, 0) == group)) |> Enum.sort(),
        in_group != [],
        row <- [{:group, group} | Enum.map(in_group, fn {_, _, id} -> {:member, id} end)],
        do: row
  end

  defp apply_logged({:join, id, name, roles}, members),
    do: Map.put(members, id, %{name: name, roles: roles, status: :offline})

  defp apply_logged({:leave, id}, members), do: Map.delete(members, id)
  defp apply_logged({:message, _id, _channel, _mentions}, members), do: members

  defp apply_logged({:presence, id, status}, members),
    do: Map.replace_lazy(members, id, &%{&1 | status: status})

  defp apply_logged({:roles, id, roles}, members),
    do: Map.replace_lazy(members, id, &%{&1 | roles: roles})
end

defmodule GuildKit.Relay.Server do
  # A relay: up to `max_sessions` sessions of one guild, on the sessions' own node. It
  # holds them in a GuildKit.Audience with a GuildKit.Permissions of its own, monitors
  # them, and does the permission checks and the local sends for every message the
  # guild hands it (see GuildKit.Relay for the protocol and the guarantees).
  #
  # Everything the guild sends a relay travels through GuildKit.Fanout under the guild's
  # partitioner key, so a relay handles the guild's messages in the order the guild
  # sent them. A relay sends the guild only batched reports: what it learned of exits
  # and the disconnects it carried out (in batches at most every @report_ms), and
  # its delivery counter (at its passive ticks, when it changed).
  @moduledoc false

  use GenServer, restart: :transient

  alias GuildKit.{Audience, Permissions}

  # How long exits and disconnects are collected before they are reported to the guild
  # in one message.
  @report_ms 20

  # Passive updates go out a slice of the sessions at a time (Audience.select_groups/4's
  # `:slice`), one slice of 16 every passive_interval / 16: the sends of a relay's 15,000
  # passive sessions at once put 15,000 processes in the run queue ahead of the next
  # event's active sessions.
  @passive_slices [16, 8, 4, 2, 1]

  @spec start_link(map()) :: GenServer.on_start()
  def start_link(args) do
    # The mailbox stays on-heap: OTP 25 gives off-heap queues parallel signal buffers
    # under contention, and then messages of different senders lose their causal
    # order, which the order of batches across a fan-out worker's restart relies on.
    GenServer.start_link(__MODULE__, args)
  end

  @impl GenServer
  def init(args) do
    permissions =
      case args.permissions do
        %Permissions{} = permissions -> permissions
        options -> Permissions.new(options)
      end

    # The guild learns this way of a relay it did not start (a restart by the
    # supervisor after a crash) and of one whose start it stopped waiting for.
    send(args.guild, {GuildKit.Relay, args.tag, :up, self(), args.version, args.start})
    # Never more slices than milliseconds in an interval; each slice's turn comes once
    # every `slices` ticks, which is never sooner than passive_interval.
    slices = Enum.find(@passive_slices, &(&1 <= args.passive_interval))
    tick_ms = div(args.passive_interval + slices - 1, slices)
    Process.send_after(self(), :tick, tick_ms)

    {:ok,
     %{
       guild: args.guild,
       guild_ref: Process.monitor(args.guild),
       guild_id: args.guild_id,
       tag: args.tag,
       tick_ms: tick_ms,
       audience: Audience.new(),
       permissions: permissions,
       seq: 0,
       # channel_id => seq of its last event, until every slice has been told of it
       channels: %{},
       # the slice whose turn is next, and for each slice the seq it was last told up to
       slice: 0,
       told: Tuple.duplicate(0, slices),
       # sessions it is done with, to report: exited, or {pid, leave} once disconnected
       done: [],
       # passive sessions not yet sent a passive update here => the seq they became
       # passive at: their first update lists no event from before (they had those
       # as events, or from the relay they were on before)
       since: %{},
       deliveries: 0,
       reported: 0
     }}
  end

  @impl GenServer
  def handle_info({GuildKit.Relay, :event, seq, event, filter, mentions}, state) do
    pids = Audience.select(state.audience, state.permissions, filter, force: mentions)
    sent = deliver(pids, {:guild_event, state.guild_id, seq, event})

    channels =
      case filter do
        {:channel, channel_id, _bits} -> Map.put(state.channels, channel_id, seq)
        :all -> state.channels
      end

    {:noreply, %{state | seq: seq, channels: channels, deliveries: state.deliveries + sent}}
  end

  def handle_info({GuildKit.Relay, :ops, seq, changes}, state) do
    sent =
      Enum.reduce(changes, 0, fn {window, ops}, sent ->
        pids = Audience.select(state.audience, state.permissions, {:window, window})
        sent + deliver(pids, {:member_list_ops, state.guild_id, seq, window, ops})
      end)

    {:noreply, %{state | seq: seq, deliveries: state.deliveries + sent}}
  end

  def handle_info({GuildKit.Relay, :batch, commands}, state),
    do: {:noreply, Enum.reduce(commands, state, &command/2)}

  # What the guild held for this relay while its start had not answered, in order.
  def handle_info({GuildKit.Relay, :held, messages}, state) do
    {:noreply,
     Enum.reduce(messages, state, fn message, state ->
       {:noreply, state} = handle_info(message, state)
       state
     end)}
  end

  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, state.tick_ms)
    state = passive_updates(state)
    # The delivery counter goes to the guild once a passive interval, not once a slice.
    {:noreply, if(state.slice == 0, do: report(state), else: state)}
  end

  def handle_info(:report_done, state), do: {:noreply, report(state)}

  def handle_info({:DOWN, ref, :process, _guild, _reason}, %{guild_ref: ref} = state),
    do: {:stop, :normal, state}

  # A session's monitor outlives a disconnect (see command/2), and the exit of a
  # session that left is reported too: the guild remembers which relay it left until
  # then (a session connected again goes back to it).
  def handle_info({:DOWN, _ref, :process, pid, _reason}, state) do
    if Audience.member?(state.audience, pid), do: Audience.remove(state.audience, pid)
    {:noreply, to_report(%{state | since: Map.delete(state.since, pid)}, pid)}
  end

  def handle_info(_other, state), do: {:noreply, state}

  ## Commands from the guild, in the order it gave them

  # The monitor's reference is not kept (a map of them would cost a relay more than its
  # audience does), so a disconnect cannot take the monitor back: it stays until the
  # session exits, and a session connected again here gets one more.
  defp command({:connect, pid, member_id, roles, active, watch, syncs, seq}, state) do
    if Audience.member?(state.audience, pid) do
      state
    else
      :ok = Audience.add(state.audience, pid, member_id, roles, active: active, watch: watch)
      _ = Process.monitor(pid)
      sync(syncs, pid, seq, state)
      %{passive_since(state, pid, active, seq) | seq: max(seq, state.seq)}
    end
  end

  # Confirmed to the guild (in the next report), which until then tells the session if
  # this relay is lost: it may die with events for the session still in its queue.
  defp command({:disconnect, pid, leave}, state) do
    Audience.remove(state.audience, pid)
    to_report(%{state | since: Map.delete(state.since, pid)}, {pid, leave})
  end

  defp command({:set_active, pid, active, watch, syncs, seq}, state) do
    if Audience.member?(state.audience, pid) do
      changes = if watch, do: [active: active, watch: watch], else: [active: active]
      :ok = Audience.update(state.audience, pid, changes)
      sync(syncs, pid, seq, state)
      %{passive_since(state, pid, active, seq) | seq: max(seq, state.seq)}
    else
      state
    end
  end

  defp command({:update_member, member_id, roles}, state) do
    _ = Audience.update_member(state.audience, member_id, roles)
    state
  end

  defp command({:permissions, %Permissions{} = permissions}, state),
    do: %{state | permissions: permissions}

  defp command({:permissions, options}, state),
    do: %{state | permissions: Permissions.new(options)}

  defp passive_since(state, pid, false, seq), do: %{state | since: Map.put(state.since, pid, seq)}
  defp passive_since(state, pid, true, _seq), do: %{state | since: Map.delete(state.since, pid)}

  defp sync(syncs, pid, seq, state) do
    for {window, rows} <- syncs,
        do: send(pid, {:member_list_sync, state.guild_id, seq, window, rows})

    :ok
  end

  defp deliver(pids, message),
    do: Enum.reduce(pids, 0, fn pid, n -> send(pid, message) && n + 1 end)

  # One message per passive session of this tick's slice that may see a channel with
  # events since the slice's last update, grouped by what they may see: one native call.
  defp passive_updates(state) do
    told = elem(state.told, state.slice)

    # A channel the permissions dropped since its event is no longer anybody's to see.
    channels =
      Map.filter(state.channels, fn {id, _} -> Permissions.has_channel?(state.permissions, id) end)

    news = Map.filter(channels, fn {_id, last} -> last > told end)

    {sent, since} =
      if news == %{} do
        {0, state.since}
      else
        state.audience
        |> Audience.select_groups(state.permissions, news,
          slice: {state.slice, tuple_size(state.told)}
        )
        |> Enum.reduce({0, state.since}, fn {seen, pids}, {sent, since} ->
          deliver_passive(pids, seen, sent, since, state)
        end)
      end

    told = put_elem(state.told, state.slice, state.seq)
    everyone_told = told |> Tuple.to_list() |> Enum.min()

    %{
      state
      | channels: Map.filter(channels, fn {_id, last} -> last > everyone_told end),
        since: since,
        told: told,
        slice: rem(state.slice + 1, tuple_size(told)),
        deliveries: state.deliveries + sent
    }
  end

  # A session in `since` is told only of events after the seq it became passive at, and
  # leaves `since` with its first update.
  defp deliver_passive(pids, seen, sent, since, state) when map_size(since) == 0,
    do: {sent + deliver(pids, {:passive_update, state.guild_id, state.seq, seen}), since}

  defp deliver_passive(pids, seen, sent, since, state) do
    Enum.reduce(pids, {sent, since}, fn pid, {sent, since} ->
      case since do
        %{^pid => seq} ->
          case Map.filter(seen, fn {_channel, last} -> last > seq end) do
            empty when empty == %{} ->
              {sent, since}

            newer ->
              send(pid, {:passive_update, state.guild_id, state.seq, newer})
              {sent + 1, Map.delete(since, pid)}
          end

        _ ->
          send(pid, {:passive_update, state.guild_id, state.seq, seen})
          {sent + 1, since}
      end
    end)
  end

  defp to_report(state, exit_or_disconnect) do
    _ = if state.done == [], do: Process.send_after(self(), :report_done, @report_ms)
    %{state | done: [exit_or_disconnect | state.done]}
  end

  defp report(%{done: [], deliveries: same, reported: same} = state), do: state

  defp report(state) do
    send(
      state.guild,
      {GuildKit.Relay, state.tag, :report, self(), state.done, state.deliveries - state.reported}
    )

    %{state | done: [], reported: state.deliveries}
  end
end

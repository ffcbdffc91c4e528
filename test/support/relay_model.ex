defmodule GuildKit.Test.RelayModel do
  @moduledoc """
  A pure-Elixir model of what each session of a `GuildKit.Relay` guild must receive,
  written from the Relay moduledoc, for a sequence of operations applied in the guild:

    * `{:connect, pid, member_id, role_ids, active, watch, rows?}`
    * `{:disconnect, pid}`
    * `{:set_active, pid, active, watch | nil, rows?}`
    * `{:update_member, member_id, role_ids}`
    * `{:put_permissions, options}` (the options of `GuildKit.Permissions.new/1`)
    * `{:dispatch, event, to, mentions}`
    * `{:dispatch_ops, changes}`
    * `{:lost, pids}` - the sessions were lost with their relay or node.

  Permissions are computed with `GuildKit.Test.PermissionsModel`. Events, ops and syncs
  are modelled exactly (`expected/2`, in order); passive updates, whose timing depends on
  each relay's clock, are checked against rules (`check/3`): every update is non-empty
  and lists, for channels the session may see while passive at that seq, the seq of the
  channel's last event, newer than the session's previous update; a session passive and
  unchanged since a channel's last event gets it; and no more updates than ticks.

  Rows given with `rows: true` are `rows/1` of the window.
  """

  import Bitwise

  alias GuildKit.Test.PermissionsModel

  @view_channel 0x400

  defstruct guild_id: nil,
            perms: nil,
            perms_since: 0,
            seq: 0,
            sessions: %{},
            expected: %{},
            lost: %{},
            channel_events: %{},
            snapshots: []

  @type t :: %__MODULE__{}

  @doc "The rows the guild's `rows:` function returns for a window in the model tests."
  @spec rows(tuple()) :: [term()]
  def rows({first, last}), do: [{:rows_of, first, last}]

  @doc "A model of guild `guild_id` with permissions built from `options`."
  @spec new(term(), keyword()) :: t()
  def new(guild_id, options) do
    %__MODULE__{guild_id: guild_id, perms: PermissionsModel.new(options)} |> snapshot()
  end

  @doc "Applies one operation (see the moduledoc)."
  @spec apply_op(t(), tuple()) :: t()
  def apply_op(model, op), do: model |> step(op) |> snapshot()

  defp step(model, {:connect, pid, member, roles, active, watch, rows?}) do
    session = %{member: member, roles: roles, active: active, watch: watch, since: model.seq}
    model = %{model | sessions: Map.put(model.sessions, pid, session)}
    if rows?, do: sync(model, pid, watch), else: model
  end

  defp step(model, {:disconnect, pid}), do: %{model | sessions: Map.delete(model.sessions, pid)}

  defp step(model, {:set_active, pid, active, watch, rows?}) do
    case model.sessions do
      %{^pid => session} ->
        session = %{session | active: active, watch: watch || session.watch, since: model.seq}
        model = %{model | sessions: Map.put(model.sessions, pid, session)}
        if rows?, do: sync(model, pid, watch || []), else: model

      _ ->
        model
    end
  end

  defp step(model, {:update_member, member, roles}) do
    sessions =
      Map.new(model.sessions, fn
        {pid, %{member: ^member} = s} -> {pid, %{s | roles: roles, since: model.seq}}
        other -> other
      end)

    %{model | sessions: sessions}
  end

  defp step(model, {:put_permissions, options}),
    do: %{model | perms: PermissionsModel.new(options), perms_since: model.seq}

  defp step(model, {:dispatch, event, to, mentions}) do
    seq = model.seq + 1
    message = {:guild_event, model.guild_id, seq, event}

    model =
      Enum.reduce(model.sessions, model, fn {pid, s}, model ->
        if (s.active or s.member in mentions) and sees?(model.perms, s, to),
          do: put_expected(model, pid, message),
          else: model
      end)

    channel_events =
      case to do
        :all -> model.channel_events
        {:channel, c} -> Map.update(model.channel_events, c, [seq], &[seq | &1])
        {:channel, c, _bits} -> Map.update(model.channel_events, c, [seq], &[seq | &1])
      end

    %{model | seq: seq, channel_events: channel_events}
  end

  defp step(model, {:dispatch_ops, changes}) do
    seq = model.seq + 1

    model =
      for {pid, s} <- model.sessions,
          s.active,
          {window, ops} <- changes,
          window in s.watch,
          reduce: model do
        model -> put_expected(model, pid, {:member_list_ops, model.guild_id, seq, window, ops})
      end

    %{model | seq: seq}
  end

  defp step(model, {:lost, pids}) do
    lost = Map.new(pids, &{&1, Map.get(model.expected, &1, [])})
    %{model | sessions: Map.drop(model.sessions, pids), lost: Map.merge(model.lost, lost)}
  end

  defp sync(model, pid, watch) do
    Enum.reduce(watch, model, fn window, model ->
      put_expected(
        model,
        pid,
        {:member_list_sync, model.guild_id, model.seq, window, rows(window)}
      )
    end)
  end

  defp put_expected(model, pid, message),
    do: %{model | expected: Map.update(model.expected, pid, [message], &[message | &1])}

  defp sees?(_perms, _session, :all), do: true
  defp sees?(perms, s, {:channel, c}), do: sees?(perms, s, {:channel, c, @view_channel})

  defp sees?(perms, s, {:channel, c, bits}),
    do: (PermissionsModel.compute(perms, s.member, s.roles, c) &&& bits) == bits

  # Each state, with the seq it was in: a relay's passive tick happens in one of them.
  defp snapshot(model),
    do: %{model | snapshots: [{model.seq, model.sessions, model.perms} | model.snapshots]}

  @doc """
  Everything but passive updates that `pid` must have received, in order. A session that
  was lost must have received a prefix of what it was sent before the loss.
  """
  @spec expected(t(), pid()) :: [term()]
  def expected(model, pid), do: model.expected |> Map.get(pid, []) |> Enum.reverse()

  @doc """
  Checks what the sessions received (`%{pid => [message]}`, in order) against the
  model, after a run that lasted `elapsed_ms` with relays ticking every `interval_ms`.
  Returns a list of problems (empty when all is well).
  """
  @spec check(t(), %{pid() => [term()]}, keyword()) :: [String.t()]
  def check(model, received, opts) do
    interval = Keyword.fetch!(opts, :interval_ms)
    elapsed = Keyword.fetch!(opts, :elapsed_ms)
    by_seq = Enum.group_by(model.snapshots, &elem(&1, 0))

    Enum.flat_map(received, fn {pid, messages} ->
      {passive, others} = Enum.split_with(messages, &match?({:passive_update, _, _, _}, &1))

      check_others(model, pid, others) ++
        check_passive(model, by_seq, pid, passive) ++
        check_complete(model, pid, passive) ++
        if length(passive) > div(elapsed, interval) + 2,
          do: ["#{inspect(pid)}: #{length(passive)} passive updates in #{elapsed} ms"],
          else: []
    end)
  end

  defp check_others(model, pid, received) do
    case model.lost do
      %{^pid => sent} ->
        sent = Enum.reverse(sent)
        {before, rest} = Enum.split_while(received, &(&1 != {:guild_relay_down, model.guild_id}))

        cond do
          not List.starts_with?(sent, before) ->
            ["(lost) " <> difference(pid, before, sent)]

          rest not in [[], [{:guild_relay_down, model.guild_id}]] ->
            ["#{inspect(pid)} (lost): got #{inspect(rest)} after the loss"]

          true ->
            []
        end

      _ ->
        expected = expected(model, pid)

        if received == expected, do: [], else: [difference(pid, received, expected)]
    end
  end

  # Where two message lists part, with a few messages from there.
  defp difference(pid, received, expected) do
    at = Enum.zip(received, expected) |> Enum.take_while(fn {a, b} -> a == b end) |> length()

    "#{inspect(pid)}: #{length(received)} messages, #{length(expected)} expected; from " <>
      "message #{at} got #{inspect(Enum.slice(received, at, 3))}, expected " <>
      inspect(Enum.slice(expected, at, 3))
  end

  defp check_passive(model, by_seq, pid, updates) do
    updates
    |> Enum.reduce({[], nil}, fn {:passive_update, gid, seq, seen}, {problems, previous} ->
      problems =
        cond do
          gid != model.guild_id ->
            ["#{inspect(pid)}: passive update of guild #{inspect(gid)}" | problems]

          seen == %{} ->
            ["#{inspect(pid)}: empty passive update at #{seq}" | problems]

          previous != nil and seq <= previous ->
            ["#{inspect(pid)}: passive update at #{seq} after one at #{previous}" | problems]

          true ->
            Enum.flat_map(seen, &check_channel(model, by_seq, pid, seq, previous, &1)) ++
              problems
        end

      {problems, seq}
    end)
    |> elem(0)
  end

  defp check_channel(model, by_seq, pid, seq, previous, {channel, last}) do
    events = Map.get(model.channel_events, channel, [])
    expected_last = Enum.find(events, &(&1 <= seq))

    states = Map.get(by_seq, seq, [])

    seen_in_one? =
      Enum.any?(states, fn {_seq, sessions, perms} ->
        case sessions do
          %{^pid => %{active: false} = s} ->
            Map.has_key?(perms.channels, channel) and sees?(perms, s, {:channel, channel})

          _ ->
            false
        end
      end)

    cond do
      last != expected_last ->
        [
          "#{inspect(pid)}: passive update at #{seq} has #{inspect(channel)} => #{last}, " <>
            "its last event then was #{inspect(expected_last)}"
        ]

      previous != nil and last <= previous ->
        ["#{inspect(pid)}: #{inspect(channel)} => #{last} again after the update at #{previous}"]

      not seen_in_one? ->
        [
          "#{inspect(pid)}: passive update at #{seq} lists #{inspect(channel)}, which it may not see while passive then"
        ]

      true ->
        []
    end
  end

  # A session passive since before a channel's last event, with the permissions of
  # then, is told of it.
  defp check_complete(model, pid, updates) do
    case model.sessions do
      %{^pid => %{active: false} = s} ->
        for {channel, [last | _]} <- model.channel_events,
            last > s.since and last > model.perms_since,
            Map.has_key?(model.perms.channels, channel),
            sees?(model.perms, s, {:channel, channel}),
            not Enum.any?(updates, fn {:passive_update, _, _, seen} -> seen[channel] == last end) do
          "#{inspect(pid)}: never told of #{inspect(channel)}'s event #{last}"
        end

      _ ->
        []
    end
  end
end

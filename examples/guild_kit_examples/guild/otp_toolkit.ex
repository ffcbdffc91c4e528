defmodule GuildKit.Examples.Guild.OtpToolkit do
  @moduledoc """
  The same guild on plain OTP, as it would be written without GuildKit, for the demo's
  comparison (see `GuildKit.Examples.Guild.Toolkit`):

    * the sidebar is a `:gb_sets` of `{group position, name, user id}` plus a count of
      members per group; a member's row is found by walking the set;
    * a window that changed is sent again whole, as `[{:sync, rows}]`;
    * events and ops are sent with a `send/2` loop, one message per session;
    * the state is measured with `:erts_debug.flat_size/1` of a copy fetched by
      `:sys.get_state/1`.
  """
  @behaviour GuildKit.Examples.Guild.Toolkit

  alias GuildKit.Examples.Guild.Sessions

  @enforce_keys [:guild_id, :set, :positions, :groups, :counts]
  defstruct [:guild_id, :set, :positions, :groups, :counts, sessions: Sessions.new()]

  @impl true
  def new(guild_id, groups, members, _opts) do
    positions = Map.new(Enum.with_index(groups))
    keys = for {id, {group, name}} <- members, do: {Map.fetch!(positions, group), name, id}

    %__MODULE__{
      guild_id: guild_id,
      set: :gb_sets.from_list(keys),
      positions: positions,
      groups: List.to_tuple(groups),
      counts: Enum.frequencies_by(keys, &elem(&1, 0))
    }
  end

  # Find the old and new row by walking the sorted members, and re-send every watched
  # window between them whole.
  @impl true
  def move(toolkit, user_id, from, to) do
    old_row = from && row(toolkit, key(toolkit, user_id, from))
    toolkit = if from, do: delete(toolkit, key(toolkit, user_id, from)), else: toolkit
    toolkit = if to, do: add(toolkit, key(toolkit, user_id, to)), else: toolkit
    new_row = to && row(toolkit, key(toolkit, user_id, to))
    changed = Enum.reject([old_row, new_row], &is_nil/1)
    {low, high} = {Enum.min(changed), if(from && to, do: Enum.max(changed), else: :infinity)}

    syncs =
      for {first, last} = window <- Sessions.windows(toolkit.sessions),
          first <= high and last >= low,
          do: {window, [{:sync, window(toolkit, window)}]}

    {syncs, toolkit}
  end

  @impl true
  def publish(toolkit, seq, event, syncs) do
    sent_at = :os.perf_counter(:nanosecond)

    for {window, sync} <- syncs, session <- Sessions.watching(toolkit.sessions, window) do
      send(session, {:member_list_ops, toolkit.guild_id, seq, window, sync})
    end

    event = {:guild_event, toolkit.guild_id, seq, sent_at, event}
    {active, sessions} = Sessions.active(toolkit.sessions)
    Enum.each(active, &send(&1, event))
    %{toolkit | sessions: sessions}
  end

  @impl true
  def connect(toolkit, session, _user_id, _member, window) do
    rows = if window, do: window(toolkit, window), else: []
    {rows, %{toolkit | sessions: Sessions.connect(toolkit.sessions, session, window)}}
  end

  @impl true
  def handle_info(message, toolkit) do
    with {:down, _window, sessions} <- Sessions.handle_info(message, toolkit.sessions) do
      {:ok, %{toolkit | sessions: sessions}}
    end
  end

  @impl true
  def rows(toolkit, first, last), do: window(toolkit, {first, last})

  @impl true
  def memory(guild, _opts) do
    state = :sys.get_state(guild, :infinity)
    {:ok, :erts_debug.flat_size(state) * :erlang.system_info(:wordsize)}
  end

  ## The sidebar

  defp key(toolkit, user_id, {group, name}),
    do: {Map.fetch!(toolkit.positions, group), name, user_id}

  defp add(toolkit, {position, _, _} = key) do
    counts = Map.update(toolkit.counts, position, 1, &(&1 + 1))
    %{toolkit | set: :gb_sets.add(key, toolkit.set), counts: counts}
  end

  defp delete(toolkit, {position, _, _} = key) do
    counts =
      case Map.fetch!(toolkit.counts, position) do
        1 -> Map.delete(toolkit.counts, position)
        count -> Map.put(toolkit.counts, position, count - 1)
      end

    %{toolkit | set: :gb_sets.delete(key, toolkit.set), counts: counts}
  end

  # A member's row: its rank, found by walking the set, plus a header for each
  # non-empty group up to its own.
  defp row(toolkit, {position, _, _} = key) do
    headers = Enum.count(toolkit.counts, fn {p, _} -> p <= position end)
    rank(:gb_sets.iterator(toolkit.set), key, 0) + headers
  end

  defp rank(iterator, key, rank) do
    case :gb_sets.next(iterator) do
      {^key, _} -> rank
      {_, iterator} -> rank(iterator, key, rank + 1)
    end
  end

  # The rows first..last: walk the sorted members from the start, counting a header row
  # before each group's first member.
  defp window(toolkit, {first, last}) do
    toolkit.set
    |> :gb_sets.iterator()
    |> window_rows(toolkit.groups, nil, 0, first, last, [])
  end

  defp window_rows(_iterator, _groups, _current, index, _first, last, acc) when index > last,
    do: Enum.reverse(acc)

  defp window_rows(iterator, groups, current, index, first, last, acc) do
    case :gb_sets.next(iterator) do
      :none ->
        Enum.reverse(acc)

      {{^current, _, id}, iterator} ->
        acc = keep({:member, id}, index, first, acc)
        window_rows(iterator, groups, current, index + 1, first, last, acc)

      {{position, _, id}, iterator} ->
        header = keep({:group, elem(groups, position)}, index, first, acc)

        acc =
          if index + 1 <= last, do: keep({:member, id}, index + 1, first, header), else: header

        window_rows(iterator, groups, position, index + 2, first, last, acc)
    end
  end

  defp keep(row, index, first, acc) when index >= first, do: [row | acc]
  defp keep(_row, _index, _first, acc), do: acc
end

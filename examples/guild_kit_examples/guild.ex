defmodule GuildKit.Examples.Guild do
  @moduledoc """
  A guild: one GenServer that owns a community's members, its member sidebar and its
  connected sessions, written as the reference integration of GuildKit.

  Copy what you need. The places where GuildKit does the heavy lifting are marked
  `GuildKit:` below:

    * the member sidebar is a `GuildKit.MemberList`: groups are the hoisted roles in
      order, then `:online`, then `:offline`; every presence or role change moves a
      member and returns the ops for each window of rows that sessions watch;
    * every change is published to the active sessions with `GuildKit.Fanout.send/3`,
      and each watched window's ops to the sessions watching it;
    * `memory/2` measures the state inside the guild with
      `GuildKit.MemoryEstimator.process/2`, without copying it out.

  Sessions (one process per online user, see `GuildKit.Examples.Session`) connect
  either passive (the user is not looking at this guild: they get nothing) or active
  with a window of the sidebar: they get the rows of their window on connect, then every
  event and the ops for their window.

  The `toolkit: :otp` option runs the same guild on plain OTP, as it would be written
  without GuildKit: a `:gb_sets` sidebar whose indexes are found by walking it, windows
  re-sent whole (a SYNC) when they change, a `send/2` loop, and
  `:erts_debug.flat_size/1` on a copy of the state. The demo compares the two.

  ## Messages to sessions

    * `{:member_list_ops, guild, seq, range, ops}` - the ops for a watched window, see
      `GuildKit.MemberList` (the `:otp` guild sends `[{:sync, rows}]`), sent before the
      event of the same `seq`;
    * `{:guild_event, guild, seq, sent_at, event}` - every change, to every active
      session; `sent_at` is `:os.perf_counter(:nanosecond)`, comparable across nodes of
      one machine.
  """
  use GenServer

  alias GuildKit.{Fanout, MemberList, MemoryEstimator}

  @typedoc "A change to the guild, as published to active sessions."
  @type event ::
          {:join, user_id(), String.t(), [role()]}
          | {:leave, user_id()}
          | {:presence, user_id(), :online | :offline}
          | {:roles, user_id(), [role()]}

  @type user_id :: term()
  @type role :: term()
  @typedoc "A member as the guild keeps it."
  @type member :: %{name: String.t(), roles: [role()], status: :online | :offline}

  defstruct [
    :id,
    :toolkit,
    :hoisted,
    :sidebar,
    :timings,
    members: %{},
    watchers: %{},
    sessions: %{},
    seq: 0
  ]

  ## Client API

  @doc """
  Starts a guild.

  ## Options

    * `:id` - the guild's id, sent with every message (default: the pid);
    * `:hoisted_roles` - roles shown as their own sidebar group, in display order
      (default `[]`);
    * `:members` - initial members, `[{user_id, member}]`, loaded without events;
    * `:toolkit` - `:guild_kit` (default) or `:otp` for the plain-OTP comparison;
    * `:timings` - an `:atomics` array that receives each event's sidebar update time
      in nanoseconds, at index `rem(seq, size) + 1` (default: none);
    * `:name` - a name to register the guild under.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts =
      Keyword.validate!(opts, [
        :id,
        :name,
        :timings,
        members: [],
        hoisted_roles: [],
        toolkit: :guild_kit
      ])

    unless opts[:toolkit] in [:guild_kit, :otp] do
      raise ArgumentError,
            "expected :toolkit to be :guild_kit or :otp, got: #{inspect(opts[:toolkit])}"
    end

    gen_opts = if opts[:name], do: [name: opts[:name]], else: []
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "A user joins the guild, offline, with `roles`."
  @spec join(GenServer.server(), user_id(), String.t(), [role()]) :: :ok
  def join(guild, user_id, name, roles \\ []),
    do: apply_events(guild, [{:join, user_id, name, roles}])

  @doc "A user leaves the guild."
  @spec leave(GenServer.server(), user_id()) :: :ok
  def leave(guild, user_id), do: apply_events(guild, [{:leave, user_id}])

  @doc "A user goes online or offline."
  @spec presence(GenServer.server(), user_id(), :online | :offline) :: :ok
  def presence(guild, user_id, status), do: apply_events(guild, [{:presence, user_id, status}])

  @doc "A user's roles change."
  @spec roles(GenServer.server(), user_id(), [role()]) :: :ok
  def roles(guild, user_id, roles), do: apply_events(guild, [{:roles, user_id, roles}])

  @doc "Applies events in order, publishing each; returns once all are applied."
  @spec apply_events(GenServer.server(), [event()]) :: :ok
  def apply_events(guild, events), do: GenServer.call(guild, {:events, events}, :infinity)

  @doc """
  Connects a session process for `user_id`. With `watch: {first, last}` the session is
  active and the call returns `{:ok, rows}` for that window of the sidebar; without it
  the session is passive and the call returns `{:ok, []}`. The guild monitors the
  session and forgets it when it exits.
  """
  @spec connect(GenServer.server(), user_id(), pid(), keyword()) :: {:ok, [MemberList.row()]}
  def connect(guild, user_id, session, opts \\ []) do
    opts = Keyword.validate!(opts, [:watch])
    GenServer.call(guild, {:connect, user_id, session, opts[:watch]}, :infinity)
  end

  @doc "Sidebar rows `first..last`, as active sessions see them."
  @spec rows(GenServer.server(), non_neg_integer(), non_neg_integer()) :: [MemberList.row()]
  def rows(guild, first, last), do: GenServer.call(guild, {:rows, first, last}, :infinity)

  @doc """
  The size in bytes of the guild's state. With the GuildKit toolkit, an estimate made
  inside the guild by `GuildKit.MemoryEstimator.process/2` (options are passed on);
  with `:otp`, `:erts_debug.flat_size/1` of a copy fetched by `:sys.get_state/1`.
  """
  @spec memory(GenServer.server(), keyword()) :: {:ok, non_neg_integer()} | {:error, term()}
  def memory(guild, opts \\ []) do
    case GenServer.call(guild, :toolkit) do
      :guild_kit ->
        # GuildKit: measured in place, in microseconds, without copying the state out.
        # The first entry of the breakdown is the whole state.
        with {:ok, [{[], total} | _]} <-
               MemoryEstimator.process(guild, Keyword.put(opts, :depth, 0)) do
          {:ok, total.bytes}
        end

      :otp ->
        {:ok,
         :erts_debug.flat_size(:sys.get_state(guild, :infinity)) * :erlang.system_info(:wordsize)}
    end
  end

  ## Server

  @impl GenServer
  def init(opts) do
    hoisted = opts[:hoisted_roles]
    groups = hoisted ++ [:online, :offline]
    members = Map.new(opts[:members])

    state = %__MODULE__{
      id: opts[:id] || self(),
      toolkit: opts[:toolkit],
      hoisted: hoisted,
      members: members,
      timings: opts[:timings]
    }

    {:ok, %{state | sidebar: new_sidebar(state, groups, members)}}
  end

  @impl GenServer
  def handle_call({:events, events}, _from, state),
    do: {:reply, :ok, Enum.reduce(events, state, &apply_event/2)}

  def handle_call({:connect, user_id, session, watch}, _from, state) do
    Process.monitor(session)
    {rows, state} = subscribe(state, session, watch)
    {:reply, {:ok, rows}, %{state | sessions: Map.put(state.sessions, session, {user_id, watch})}}
  end

  def handle_call({:rows, first, last}, _from, state),
    do: {:reply, sidebar_rows(state, first, last), state}

  def handle_call(:toolkit, _from, state), do: {:reply, state.toolkit, state}

  @impl GenServer
  def handle_info({:DOWN, _ref, :process, session, _reason}, state) do
    case Map.pop(state.sessions, session) do
      {nil, _} ->
        {:noreply, state}

      {{_user_id, watch}, sessions} ->
        {:noreply, unsubscribe(%{state | sessions: sessions}, session, watch)}
    end
  end

  ## Events

  defp apply_event(event, state) do
    seq = state.seq + 1
    user_id = elem(event, 1)
    before = Map.get(state.members, user_id)
    members = update_members(state.members, event)
    started = System.monotonic_time(:nanosecond)

    {ops, sidebar} =
      move(state, user_id, placement(state, before), placement(state, members[user_id]))

    record_timing(state.timings, seq, System.monotonic_time(:nanosecond) - started)
    state = %{state | members: members, sidebar: sidebar, seq: seq}
    publish(state, seq, event, ops)
    state
  end

  defp update_members(members, {:join, user_id, name, roles}),
    do: Map.put(members, user_id, %{name: name, roles: roles, status: :offline})

  defp update_members(members, {:leave, user_id}), do: Map.delete(members, user_id)

  defp update_members(members, {:presence, user_id, status}),
    do: Map.replace_lazy(members, user_id, &%{&1 | status: status})

  defp update_members(members, {:roles, user_id, roles}),
    do: Map.replace_lazy(members, user_id, &%{&1 | roles: roles})

  # Where a member sits in the sidebar: offline members in :offline, online members
  # under their first hoisted role, else in :online; sorted by name.
  defp placement(_state, nil), do: nil
  defp placement(_state, %{status: :offline, name: name}), do: {:offline, name}

  defp placement(state, %{roles: roles, name: name}),
    do: {Enum.find(state.hoisted, :online, &(&1 in roles)), name}

  ## The sidebar

  defp new_sidebar(%{toolkit: :guild_kit} = state, groups, members) do
    # GuildKit: the whole sidebar, with window ops, in one native structure.
    sidebar = MemberList.new(groups: groups)

    for {id, member} <- members do
      {group, name} = placement(state, member)
      MemberList.put(sidebar, id, group, name)
    end

    sidebar
  end

  defp new_sidebar(%{toolkit: :otp} = state, groups, members) do
    positions = Map.new(Enum.with_index(groups))

    keys =
      for {id, member} <- members do
        {group, name} = placement(state, member)
        {Map.fetch!(positions, group), name, id}
      end

    counts = Enum.frequencies_by(keys, &elem(&1, 0))

    %{
      set: :gb_sets.from_list(keys),
      positions: positions,
      groups: List.to_tuple(groups),
      counts: counts
    }
  end

  defp move(state, _user_id, same, same), do: {[], state.sidebar}
  defp move(state, user_id, from, to), do: move_member(state, user_id, from, to)

  # GuildKit: one call moves the member and returns the ops for every watched window.
  defp move_member(%{toolkit: :guild_kit} = state, user_id, _from, nil),
    do: {MemberList.remove(state.sidebar, user_id), state.sidebar}

  defp move_member(%{toolkit: :guild_kit} = state, user_id, _from, {group, name}),
    do: {MemberList.put(state.sidebar, user_id, group, name), state.sidebar}

  # Without MemberList: find the old and new index by walking the sorted members, and
  # re-send every watched window between them whole.
  defp move_member(%{toolkit: :otp, sidebar: sidebar} = state, user_id, from, to) do
    old_row = from && otp_row(sidebar, otp_key(sidebar, user_id, from))
    sidebar = if from, do: otp_delete(sidebar, otp_key(sidebar, user_id, from)), else: sidebar
    sidebar = if to, do: otp_add(sidebar, otp_key(sidebar, user_id, to)), else: sidebar
    new_row = to && otp_row(sidebar, otp_key(sidebar, user_id, to))
    rows = Enum.reject([old_row, new_row], &is_nil/1)
    {low, high} = {Enum.min(rows), if(from && to, do: Enum.max(rows), else: :infinity)}

    syncs =
      for {first, last} = range <- Map.keys(state.watchers), first <= high and last >= low do
        {range, [{:sync, otp_window(sidebar, range)}]}
      end

    {syncs, sidebar}
  end

  defp otp_key(sidebar, user_id, {group, name}),
    do: {Map.fetch!(sidebar.positions, group), name, user_id}

  defp otp_add(sidebar, {position, _, _} = key),
    do: %{
      sidebar
      | set: :gb_sets.add(key, sidebar.set),
        counts: Map.update(sidebar.counts, position, 1, &(&1 + 1))
    }

  defp otp_delete(sidebar, {position, _, _} = key) do
    counts = Map.update!(sidebar.counts, position, &(&1 - 1))
    counts = if counts[position] == 0, do: Map.delete(counts, position), else: counts
    %{sidebar | set: :gb_sets.delete(key, sidebar.set), counts: counts}
  end

  # A member's row: its rank, found by walking the set, plus a header for each
  # non-empty group up to its own.
  defp otp_row(sidebar, {position, _, _} = key) do
    headers = Enum.count(sidebar.counts, fn {p, _} -> p <= position end)
    otp_rank(:gb_sets.iterator(sidebar.set), key, 0) + headers
  end

  defp otp_rank(iterator, key, rank) do
    case :gb_sets.next(iterator) do
      {^key, _} -> rank
      {_, iterator} -> otp_rank(iterator, key, rank + 1)
    end
  end

  defp otp_window(sidebar, {first, last}) do
    sidebar.set
    |> :gb_sets.iterator()
    |> Stream.unfold(fn iterator ->
      case :gb_sets.next(iterator) do
        :none -> nil
        next -> next
      end
    end)
    |> Stream.transform(nil, fn {position, _, id}, current ->
      member = {:member, id}

      if position == current,
        do: {[member], current},
        else: {[{:group, elem(sidebar.groups, position)}, member], position}
    end)
    |> Stream.drop(first)
    |> Enum.take(last - first + 1)
  end

  defp sidebar_rows(%{toolkit: :guild_kit} = state, first, last),
    do: MemberList.rows(state.sidebar, first, last)

  defp sidebar_rows(%{toolkit: :otp} = state, first, last),
    do: otp_window(state.sidebar, {first, last})

  ## Sessions

  defp subscribe(state, _session, nil), do: {[], state}

  defp subscribe(state, session, range) do
    rows =
      case state.toolkit do
        :guild_kit -> MemberList.watch(state.sidebar, range)
        :otp -> otp_window(state.sidebar, range)
      end

    {rows, %{state | watchers: Map.update(state.watchers, range, [session], &[session | &1])}}
  end

  defp unsubscribe(state, _session, nil), do: state

  defp unsubscribe(state, session, range) do
    if state.toolkit == :guild_kit, do: MemberList.unwatch(state.sidebar, range)

    watchers =
      case List.delete(Map.fetch!(state.watchers, range), session) do
        [] -> Map.delete(state.watchers, range)
        rest -> Map.put(state.watchers, range, rest)
      end

    %{state | watchers: watchers}
  end

  defp publish(state, seq, event, ops) do
    sent_at = :os.perf_counter(:nanosecond)

    for {range, range_ops} <- ops do
      fan_out(
        state,
        Map.get(state.watchers, range, []),
        {:member_list_ops, state.id, seq, range, range_ops}
      )
    end

    active = state.watchers |> Map.values() |> List.flatten()
    fan_out(state, active, {:guild_event, state.id, seq, sent_at, event})
  end

  # GuildKit: one call, one message per node; the guild is not blocked by the sends.
  defp fan_out(%{toolkit: :guild_kit}, sessions, message), do: Fanout.send(sessions, message)
  defp fan_out(%{toolkit: :otp}, sessions, message), do: Enum.each(sessions, &send(&1, message))

  defp record_timing(nil, _seq, _ns), do: :ok

  defp record_timing(timings, seq, ns),
    do: :atomics.put(timings, rem(seq, :atomics.info(timings).size) + 1, ns)
end

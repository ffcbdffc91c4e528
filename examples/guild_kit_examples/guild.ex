defmodule GuildKit.Examples.Guild do
  @moduledoc """
  A guild: one GenServer that owns a community's members, its member sidebar and its
  connected sessions, written as the reference integration of GuildKit.

  Copy what you need. This module keeps the members and turns each change into an
  event; the sidebar and the sessions belong to a toolkit, a module implementing
  `GuildKit.Examples.Guild.Toolkit`. The default, `toolkit: :relay`
  (`GuildKit.Examples.Guild.RelayToolkit`), is the one to copy:

    * the member sidebar is a `GuildKit.MemberList`: groups are the hoisted roles in
      order, then `:online`, then `:offline`; every presence or role change moves a
      member and returns the ops for each window of rows that sessions watch;
    * sessions are handed to `GuildKit.Relay`: relays on each session's node hold them,
      check each event's channel permissions (the `:permissions` option) and send to
      them, so an event costs the guild one message per node, not one per session;
    * `memory/2` measures the state inside the guild with
      `GuildKit.MemoryEstimator.process/2`, without copying it out.

  Sessions (one process per online user, see `GuildKit.Examples.Session`) connect
  either passive (the user is not looking at this guild: they get passive updates and
  the messages that mention them) or active with a window of the sidebar: they get the
  rows of their window, then every event they may see and the ops for their window.

  Two more toolkits run the same guild for the demo's comparison: `toolkit: :guild_kit`
  (`GuildKit.Examples.Guild.GuildKitToolkit`) keeps every session in the guild's state
  and sends each event with `GuildKit.Fanout.send/3` to the list of all active
  sessions, kept in the guild's state (rebuilt after a connect or an exit, not per
  event); `toolkit: :otp`
  (`GuildKit.Examples.Guild.OtpToolkit`) is the guild as it would be written without
  GuildKit: a `:gb_sets` sidebar whose indexes are found by walking it, windows re-sent
  whole (a SYNC) when they change, a `send/2` loop, and `:erts_debug.flat_size/1` on a
  copy of the state. Neither checks permissions: every active session gets every event,
  and passive sessions get nothing.

  ## Messages to sessions

    * `{:member_list_ops, guild, seq, range, ops}` - the ops for a watched window, see
      `GuildKit.MemberList` (the `:otp` guild sends `[{:sync, rows}]`), sent before the
      event of the same `seq`;
    * `{:guild_event, guild, seq, sent_at, event}` (`:guild_kit`, `:otp`), or
      `{:guild_event, guild, relay_seq, {:stamp, seq, sent_at, event}}` through relays
      (see `GuildKit.Relay` for these and the other messages of relays); `sent_at` is
      `:os.perf_counter(:nanosecond)`, comparable across nodes of one machine.
  """
  use GenServer

  # child_spec/1 comes from `use GenServer`: `{GuildKit.Examples.Guild, opts}` in a
  # supervisor starts `start_link(opts)`.
  @spec child_spec(keyword()) :: Supervisor.child_spec()

  alias GuildKit.Examples.Guild.{GuildKitToolkit, OtpToolkit, RelayToolkit}
  alias GuildKit.MemberList

  @typedoc "A change to the guild, as published to active sessions."
  @type event ::
          {:join, user_id(), String.t(), [role()]}
          | {:leave, user_id()}
          | {:presence, user_id(), :online | :offline}
          | {:roles, user_id(), [role()]}
          | {:message, user_id(), channel_id :: term(), mentions :: [user_id()]}

  @typedoc "A user's id: any term."
  @type user_id :: term()
  @typedoc "A role: any term."
  @type role :: term()
  @typedoc "A member as the guild keeps it."
  @type member :: %{name: String.t(), roles: [role()], status: :online | :offline}

  @toolkits %{relay: RelayToolkit, guild_kit: GuildKitToolkit, otp: OtpToolkit}

  defstruct [:toolkit, :toolkit_state, :hoisted, :timings, :work, members: %{}, seq: 0]

  ## Client API

  @doc """
  Starts a guild.

  ## Options

    * `:id` - the guild's id, sent with every message (default: the pid);
    * `:hoisted_roles` - roles shown as their own sidebar group, in display order
      (default `[]`);
    * `:members` - initial members, `[{user_id, member}]`, loaded without events, in
      the order given (members sorted as the sidebar shows them load fastest);
    * `:toolkit` - `:relay` (default), `:guild_kit` (direct fan-out) or `:otp` (plain
      OTP), see above;
    * `:permissions` - the `GuildKit.Permissions` that decide who sees a message's
      channel (relay toolkit; default: everyone sees everything);
    * `:relay` - more options of `GuildKit.Relay.new/2` (`:max_sessions`,
      `:passive_interval`);
    * `:timings` - an `:atomics` array that receives each event's sidebar update time
      in nanoseconds, at index `rem(seq, size) + 1` (default: none);
    * `:work` - a `:counters` array whose first counter receives the microseconds the
      guild spends applying events, from the moment it takes a batch of events from
      its queue to its reply (time waiting in the run queue before that is not
      counted; being scheduled out in the middle is) (default: none);
    * `:name` - a name to register the guild under.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts =
      Keyword.validate!(opts, [
        :id,
        :name,
        :timings,
        :work,
        :permissions,
        members: [],
        hoisted_roles: [],
        relay: [],
        toolkit: :relay
      ])

    toolkit =
      Map.get_lazy(@toolkits, opts[:toolkit], fn ->
        raise ArgumentError,
              "expected :toolkit to be one of #{inspect(Map.keys(@toolkits))}, " <>
                "got: #{inspect(opts[:toolkit])}"
      end)

    gen_opts = if opts[:name], do: [name: opts[:name]], else: []
    GenServer.start_link(__MODULE__, Keyword.put(opts, :toolkit, toolkit), gen_opts)
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

  @doc "A user posts a message in a channel, mentioning some users."
  @spec message(GenServer.server(), user_id(), term(), [user_id()]) :: :ok
  def message(guild, user_id, channel_id, mentions \\ []),
    do: apply_events(guild, [{:message, user_id, channel_id, mentions}])

  @doc "A user's roles change."
  @spec roles(GenServer.server(), user_id(), [role()]) :: :ok
  def roles(guild, user_id, roles), do: apply_events(guild, [{:roles, user_id, roles}])

  @doc "Applies events in order, publishing each; returns once all are applied."
  @spec apply_events(GenServer.server(), [event()]) :: :ok
  def apply_events(guild, events), do: GenServer.call(guild, {:events, events}, :infinity)

  @doc """
  Connects a session process for `user_id`. With `watch: {first, last}` the session is
  active and gets the rows of that window of the sidebar: in the reply, `{:ok, rows}`,
  or (relay toolkit) as a `{:member_list_sync, ...}` message before any op, the reply
  being `{:ok, []}`. Without it the session is passive and the call returns `{:ok, []}`.
  The guild (or the session's relay) monitors the session and forgets it when it
  exits.
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
  The size in bytes of the guild's state, as its toolkit measures it: with GuildKit, an
  estimate made inside the guild by `GuildKit.MemoryEstimator.process/2` (options are
  passed on); with `:otp`, `:erts_debug.flat_size/1` of a copy fetched by
  `:sys.get_state/1`.
  """
  @spec memory(GenServer.server(), keyword()) :: {:ok, non_neg_integer()} | {:error, term()}
  def memory(guild, opts \\ []) do
    toolkit = GenServer.call(guild, :toolkit)
    toolkit.memory(guild, opts)
  end

  ## Server

  @impl GenServer
  def init(opts) do
    toolkit = opts[:toolkit]
    hoisted = opts[:hoisted_roles]
    members = Map.new(opts[:members])
    # In the order given, unless an id repeats (the last entry counts): a list in sidebar
    # order is the fastest to load.
    given = if map_size(members) == length(opts[:members]), do: opts[:members], else: members
    placed = for {id, member} <- given, do: {id, placement(hoisted, member)}
    toolkit_opts = if p = opts[:permissions], do: [permissions: p], else: []
    groups = hoisted ++ [:online, :offline]
    toolkit_state = toolkit.new(opts[:id] || self(), groups, placed, toolkit_opts ++ opts[:relay])

    {:ok,
     %__MODULE__{
       toolkit: toolkit,
       toolkit_state: toolkit_state,
       hoisted: hoisted,
       members: members,
       timings: opts[:timings],
       work: opts[:work]
     }}
  end

  @impl GenServer
  def handle_call({:events, events}, _from, %{work: nil} = state),
    do: {:reply, :ok, Enum.reduce(events, state, &apply_event/2)}

  def handle_call({:events, events}, _from, state) do
    started = System.monotonic_time(:microsecond)
    state = Enum.reduce(events, state, &apply_event/2)
    :counters.add(state.work, 1, System.monotonic_time(:microsecond) - started)
    {:reply, :ok, state}
  end

  def handle_call({:connect, user_id, session, window}, _from, state) do
    member = Map.get(state.members, user_id)

    {rows, toolkit_state} =
      state.toolkit.connect(state.toolkit_state, session, user_id, member, window)

    {:reply, {:ok, rows}, %{state | toolkit_state: toolkit_state}}
  end

  def handle_call({:rows, first, last}, _from, state),
    do: {:reply, state.toolkit.rows(state.toolkit_state, first, last), state}

  def handle_call(:toolkit, _from, state), do: {:reply, state.toolkit, state}

  @impl GenServer
  def handle_info(message, state) do
    case state.toolkit.handle_info(message, state.toolkit_state) do
      {:ok, toolkit_state} -> {:noreply, %{state | toolkit_state: toolkit_state}}
      :ignore -> {:noreply, state}
    end
  end

  ## Events

  defp apply_event(event, state) do
    seq = state.seq + 1
    user_id = elem(event, 1)
    from = placement(state.hoisted, Map.get(state.members, user_id))
    members = update_members(state.members, event)
    to = placement(state.hoisted, Map.get(members, user_id))

    started = System.monotonic_time(:nanosecond)
    {ops, toolkit_state} = move(state.toolkit, state.toolkit_state, user_id, from, to)
    record_timing(state.timings, seq, System.monotonic_time(:nanosecond) - started)

    toolkit_state = state.toolkit.publish(toolkit_state, seq, event, ops)
    %{state | members: members, toolkit_state: toolkit_state, seq: seq}
  end

  defp update_members(members, {:join, user_id, name, roles}),
    do: Map.put(members, user_id, %{name: name, roles: roles, status: :offline})

  defp update_members(members, {:leave, user_id}), do: Map.delete(members, user_id)

  defp update_members(members, {:presence, user_id, status}),
    do: Map.replace_lazy(members, user_id, &%{&1 | status: status})

  defp update_members(members, {:roles, user_id, roles}),
    do: Map.replace_lazy(members, user_id, &%{&1 | roles: roles})

  defp update_members(members, {:message, _user_id, _channel_id, _mentions}), do: members

  # Where a member sits in the sidebar: offline members in :offline, online members
  # under their first hoisted role, else in :online; sorted by name.
  defp placement(_hoisted, nil), do: nil
  defp placement(_hoisted, %{status: :offline, name: name}), do: {:offline, name}

  defp placement(hoisted, %{roles: roles, name: name}),
    do: {Enum.find(hoisted, :online, &(&1 in roles)), name}

  # A change that leaves the member where it sits (a role that is not hoisted, a
  # presence it already had) costs the toolkit nothing.
  defp move(_toolkit, toolkit_state, _user_id, same, same), do: {[], toolkit_state}

  defp move(toolkit, toolkit_state, user_id, from, to),
    do: toolkit.move(toolkit_state, user_id, from, to)

  defp record_timing(nil, _seq, _ns), do: :ok

  defp record_timing(timings, seq, ns),
    do: :atomics.put(timings, rem(seq, :atomics.info(timings).size) + 1, ns)
end

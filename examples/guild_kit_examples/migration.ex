defmodule GuildKit.Examples.Migration do
  @moduledoc """
  A guild that hands itself off to a new guild process on another node while it keeps
  serving events: the reference for moving a guild between machines with GuildKit.

  The guild (this module, a GenServer) keeps its members in a `GuildKit.SortedSet`
  and its member sidebar in a `GuildKit.MemberList` (both in native memory, outside
  its heap), and numbers every event it publishes. Its sessions (`GuildKit.Examples.Migration.Session`) deliver events in
  that order. A hand-off never copies the members through a process heap and never
  blocks the guild on the size of its state:

    1. **Snapshot.** The old guild takes `GuildKit.SortedSet.snapshot/1` and
       `GuildKit.MemberList.snapshot/1` (both O(1)) and notes its sequence number `s0`. It goes on serving; every event after `s0` is
       also kept in a tail.
    2. **Dump and send.** A worker process dumps the snapshots (`to_binary/1`, on a
       dirty scheduler) and starts the new guild on the target node with the dumps as
       arguments: two binaries over distribution.
    3. **Load.** The new guild loads them (`from_binary/1`, dirty too)
       and tells the old guild it is ready. It buffers any event it is sent until the
       catch-up arrives.
    4. **Switch at a sequence number.** The old guild sends the new one the tail
       (events `s0 + 1..s`) and `s`, its last sequence number, then tells every session
       `{:guild_switch, id, new_guild, s}`, and from then on forwards every request to
       the new guild. The new guild applies the tail without publishing it (sessions
       have it already) and numbers its first event `s + 1`.

  ## Why sequence numbers, and not fan-out order

  `GuildKit.Fanout` keeps per-receiver order for messages sent under one key on one
  node (`key:` of `GuildKit.Fanout.send/3`), whichever process sends them. The old and
  the new guild are on different nodes, so a session can receive the new guild's
  first event before the old guild's last. Each event therefore carries its sequence
  number, and a session delivers events strictly in that order: it drops numbers it
  has delivered and holds early ones until the gap before them is filled. Since the
  old guild stops numbering at `s` and the new one starts at `s + 1`, no number is
  used twice or skipped, so nothing is lost, repeated or reordered for any session.
  The requests that reach the old guild after the switch are forwarded in the order
  it received them, and reach the new guild after the catch-up: both are sent by the
  old guild, and Erlang keeps the order of messages between two processes.

      iex> alias GuildKit.Examples.Migration
      iex> alias GuildKit.Examples.Migration.Session
      iex> {:ok, guild} = Migration.start(id: :doc_guild, members: [{1, "amy"}, {2, "bob"}])
      iex> {:ok, session} = Session.start(guild)
      iex> Migration.publish(guild, {:join, {3, "cy"}})
      iex> {:ok, new_guild} = Migration.hand_off(guild, node())
      iex> Migration.publish(guild, {:leave, {1, "amy"}})
      iex> Session.wait_for(session, 2)
      [{1, {:join, {3, "cy"}}}, {2, {:leave, {1, "amy"}}}]
      iex> Migration.info(new_guild).size
      2

  The member list's watched windows travel in its dump, so the new guild reports the
  same ops for the same windows. A real guild's sessions then reconnect their sockets
  to the new node at leisure: until they do, the old node's processes only relay.

  ## Messages to sessions

  Sessions receive `{:guild_event, id, seq, event}` for every event, and
  `{:guild_switch, id, new_guild, seq}` when the guild has moved: events numbered above
  `seq` come from `new_guild`.
  """
  use GenServer

  # child_spec/1 comes from `use GenServer`.
  @spec child_spec(keyword()) :: Supervisor.child_spec()

  alias GuildKit.{Fanout, MemberList, SortedSet}

  @typedoc "A change to the guild's members, or any other event for its sessions."
  @type event :: {:join, member()} | {:leave, member()} | {:message, term()}

  @typedoc "A member: an id and a display name."
  @type member :: {term(), term()}

  @typedoc "What `info/1` returns."
  @type info :: %{
          id: term(),
          size: non_neg_integer(),
          seq: non_neg_integer(),
          sessions: non_neg_integer(),
          phase: atom()
        }

  @doc """
  Starts a guild, not linked to the caller.

  Options: `:id` (required), and either `:members` (a list of `{id, name}`, default
  `[]`) or `:dumps` with `:seq` and `:predecessor` (how `hand_off/2` starts the new
  guild). The sidebar shows every member in one group, `:members`, sorted by name.
  """
  @spec start(keyword()) :: GenServer.on_start()
  def start(opts), do: GenServer.start(__MODULE__, opts)

  @doc "Publishes `event` to the guild's sessions, applying it to its members."
  @spec publish(GenServer.server(), event()) :: :ok
  def publish(guild, event), do: GenServer.cast(guild, {:publish, event})

  @doc """
  Adds `session` to the guild's sessions and returns the guild's id and last sequence
  number: the session gets every event numbered above it.
  """
  @spec join(GenServer.server(), pid()) :: {term(), non_neg_integer()}
  def join(guild, session), do: GenServer.call(guild, {:join, session})

  @doc """
  Moves the guild to a new process on `node` (which runs `:guild_kit`), and returns
  it once the sessions have been switched over. The old guild then forwards what it
  receives to the new one.
  """
  @spec hand_off(GenServer.server(), node(), timeout()) :: {:ok, pid()}
  def hand_off(guild, node, timeout \\ 60_000),
    do: GenServer.call(guild, {:hand_off, node}, timeout)

  @doc "The guild's size, last sequence number, session count and phase."
  @spec info(GenServer.server()) :: info()
  def info(guild), do: GenServer.call(guild, :info)

  @doc """
  The guild's members and sidebar now, as dumps (`GuildKit.SortedSet.to_binary/1`,
  `GuildKit.MemberList.to_binary/1`).
  """
  @spec members_dump(GenServer.server()) :: {binary(), binary()}
  def members_dump(guild), do: GenServer.call(guild, :members_dump)

  @impl true
  def init(opts) do
    id = Keyword.fetch!(opts, :id)
    # The guild's events go through one fan-out chain per node, whichever process
    # sends them (see the moduledoc of GuildKit.Examples.Migration).
    Fanout.set_partitioner_key({:guild, id})

    state = %{id: id, sessions: [], seq: 0, phase: :serving, members: nil, sidebar: nil}

    case Keyword.fetch(opts, :dumps) do
      {:ok, {members, sidebar}} ->
        seq = Keyword.fetch!(opts, :seq)

        {:ok,
         %{
           state
           | members: SortedSet.from_binary(members),
             sidebar: MemberList.from_binary(sidebar),
             seq: seq,
             phase: {:awaiting_catch_up, []}
         }}

      :error ->
        members = Keyword.get(opts, :members, [])
        sidebar = MemberList.new(groups: [:members])
        Enum.each(members, fn {id, name} -> MemberList.put(sidebar, id, :members, name) end)
        {:ok, %{state | members: SortedSet.from_enumerable(members), sidebar: sidebar}}
    end
  end

  @impl true
  def handle_cast(request, %{phase: {:forwarding, new}} = state) do
    GenServer.cast(new, request)
    {:noreply, state}
  end

  def handle_cast(request, %{phase: {:awaiting_catch_up, early}} = state),
    do: {:noreply, %{state | phase: {:awaiting_catch_up, [request | early]}}}

  def handle_cast({:publish, event}, state) do
    state = apply_event(state, event)
    seq = state.seq + 1
    Fanout.send(state.sessions, {:guild_event, state.id, seq, event})

    state =
      case state.phase do
        {:dumping, s0, tail, from} -> %{state | phase: {:dumping, s0, [event | tail], from}}
        _ -> state
      end

    {:noreply, %{state | seq: seq}}
  end

  def handle_cast({:add_sessions, sessions}, state),
    do: {:noreply, %{state | sessions: sessions ++ state.sessions}}

  @impl true
  def handle_call(request, from, %{phase: {:forwarding, new}} = state) do
    # The new guild answers the caller directly.
    send(new, {:"$gen_call", from, request})
    {:noreply, state}
  end

  def handle_call({:join, session}, _from, state),
    do: {:reply, {state.id, state.seq}, %{state | sessions: [session | state.sessions]}}

  def handle_call(:info, _from, state) do
    phase = if is_tuple(state.phase), do: elem(state.phase, 0), else: state.phase

    info = %{
      id: state.id,
      size: SortedSet.size(state.members),
      seq: state.seq,
      sessions: length(state.sessions),
      phase: phase
    }

    {:reply, info, state}
  end

  def handle_call(:members_dump, _from, state),
    do: {:reply, {SortedSet.to_binary(state.members), MemberList.to_binary(state.sidebar)}, state}

  def handle_call({:hand_off, node}, from, %{phase: :serving} = state) do
    guild = self()
    members = SortedSet.snapshot(state.members)
    sidebar = MemberList.snapshot(state.sidebar)
    s0 = state.seq
    id = state.id

    # The dump, its transfer and the load happen in this worker and on the new node;
    # the guild goes on serving.
    spawn_link(fn ->
      dumps = {SortedSet.to_binary(members), MemberList.to_binary(sidebar)}
      opts = [id: id, dumps: dumps, seq: s0, predecessor: guild]
      {:ok, new} = :erpc.call(node, __MODULE__, :start, [opts], 60_000)
      send(guild, {:loaded, new})
    end)

    {:noreply, %{state | phase: {:dumping, s0, [], from}}}
  end

  def handle_call({:hand_off, _node}, _from, state),
    do: {:reply, {:error, {:busy, state.phase}}, state}

  @impl true
  def handle_info({:loaded, new}, %{phase: {:dumping, _s0, tail, from}} = state) do
    # The switch, at sequence number state.seq: the new guild catches up to it, the
    # sessions learn where numbers above it come from, and this guild only forwards.
    send(new, {:catch_up, Enum.reverse(tail), state.seq, state.sessions})
    Fanout.send(state.sessions, {:guild_switch, state.id, new, state.seq})
    GenServer.reply(from, {:ok, new})
    {:noreply, %{state | phase: {:forwarding, new}, sessions: []}}
  end

  def handle_info({:catch_up, tail, seq, sessions}, %{phase: {:awaiting_catch_up, early}} = state) do
    state = Enum.reduce(tail, state, &apply_event(&2, &1))
    state = %{state | seq: seq, sessions: sessions ++ state.sessions, phase: :serving}

    Enum.reduce(Enum.reverse(early), {:noreply, state}, fn request, {:noreply, state} ->
      handle_cast(request, state)
    end)
  end

  def handle_info(_message, state), do: {:noreply, state}

  defp apply_event(state, {:join, {id, name} = member}) do
    _ = SortedSet.add(state.members, member)
    _ = MemberList.put(state.sidebar, id, :members, name)
    state
  end

  defp apply_event(state, {:leave, {id, _name} = member}) do
    _ = SortedSet.remove(state.members, member)
    _ = MemberList.remove(state.sidebar, id)
    state
  end

  defp apply_event(state, _event), do: state
end

defmodule GuildKit.Examples.Migration.Session do
  @moduledoc """
  A session of the migrating guild: it delivers the guild's events strictly in the
  order of their sequence numbers, whichever guild process (old or new, on any node)
  sent them, dropping repeats and holding early arrivals until the gap before them is
  filled. It keeps what it delivered, for `wait_for/3`.
  """
  use GenServer

  # child_spec/1 comes from `use GenServer`.
  @spec child_spec(GenServer.server()) :: Supervisor.child_spec()

  alias GuildKit.Examples.Migration

  @doc "Starts a session of `guild` (not linked) and joins it."
  @spec start(GenServer.server()) :: GenServer.on_start()
  def start(guild), do: GenServer.start(__MODULE__, guild)

  @doc """
  Waits until the session has delivered `count` events and returns them in delivery
  order as `{seq, event}`.
  """
  @spec wait_for(pid(), non_neg_integer(), timeout()) :: [{pos_integer(), term()}]
  def wait_for(session, count, timeout \\ 30_000),
    do: GenServer.call(session, {:wait_for, count}, timeout)

  @impl true
  def init(guild) do
    {id, seq} = Migration.join(guild, self())

    {:ok,
     %{id: id, guild: guild, next: seq + 1, early: %{}, delivered: [], count: 0, waiting: []}}
  end

  @impl true
  def handle_info({:guild_event, id, seq, event}, %{id: id} = state) do
    state =
      cond do
        seq < state.next -> state
        seq == state.next -> deliver(state, seq, event)
        true -> %{state | early: Map.put(state.early, seq, event)}
      end

    {:noreply, answer_waiting(state)}
  end

  def handle_info({:guild_switch, id, new_guild, _seq}, %{id: id} = state),
    do: {:noreply, %{state | guild: new_guild}}

  def handle_info(_message, state), do: {:noreply, state}

  @impl true
  def handle_call({:wait_for, count}, from, state),
    do: {:noreply, answer_waiting(%{state | waiting: [{count, from} | state.waiting]})}

  # Delivers `seq`, then every held event that now follows without a gap.
  defp deliver(state, seq, event) do
    state = %{
      state
      | next: seq + 1,
        delivered: [{seq, event} | state.delivered],
        count: state.count + 1
    }

    case Map.pop(state.early, seq + 1) do
      {nil, _} -> state
      {next_event, early} -> deliver(%{state | early: early}, seq + 1, next_event)
    end
  end

  defp answer_waiting(state) do
    {ready, waiting} = Enum.split_with(state.waiting, fn {count, _} -> state.count >= count end)

    for {count, from} <- ready do
      GenServer.reply(from, state.delivered |> Enum.reverse() |> Enum.take(count))
    end

    %{state | waiting: waiting}
  end
end

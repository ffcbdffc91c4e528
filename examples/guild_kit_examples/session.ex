defmodule GuildKit.Examples.Session do
  @moduledoc """
  A connected user's session: the process a guild publishes to.

  An active session watches a window of the guild's sidebar: it keeps a copy of the
  window's rows, from the rows `GuildKit.Examples.Guild.connect/4` returned and the ops
  it receives, exactly as a client would. It checks that events arrive in order, with
  no gap, and records how long each event took to arrive in a
  `GuildKit.Examples.Session.Stats` table of its node.

  A passive session is connected but gets no per-event traffic, like a user who is not
  looking at the guild. From a relay guild (`GuildKit.Relay`) it gets passive updates
  (the latest event of each channel it may see, at most once a second) and the events
  that mention its user; it counts both in its node's `Stats`.

  Events come in two shapes: `{:guild_event, guild, seq, sent_at, event}` from the
  guilds that send themselves, and `{:guild_event, guild, relay_seq, {:stamp, seq,
  sent_at, event}}` through relays, whose own seq the session checks for order; `seq`
  is the guild's event number either way.
  """
  # Not `use GenServer`: a session is started unlinked by `start/3`, never under a
  # supervisor, so it has no child_spec/1.
  @behaviour GenServer

  alias GuildKit.Examples.Guild
  alias GuildKit.Examples.Session.Stats

  # Up to a few thousand words: about one collection cycle of an active session.
  @active_garbage_cells 2_000
  # Passive sessions start with a heap of 234 to 987 words (the default is 233): each
  # then collects after its own number of passive updates (see start/3).
  @passive_heap_spread 754

  @doc """
  Starts a session for `user_id` and connects it to `guild`.

  ## Options

    * `:watch` - the window `{first, last}` to watch; omit for a passive session;
    * `:stats` - the node's `GuildKit.Examples.Session.Stats` table (default: none).
  """
  @spec start(GenServer.server(), term(), keyword()) :: GenServer.on_start()
  def start(guild, user_id, opts \\ []) do
    opts = Keyword.validate!(opts, [:watch, :stats])

    # Passive sessions that start alike get the same passive updates, once a second,
    # and collect (and grow their heaps) on the same one: in the demo's run 150,000
    # collections and 750 MB of heap growth came within 2.5 s, and every event of
    # those seconds reached the active sessions 0.5-1 s late. A random minimum heap
    # size spreads them out (garbage, as for active sessions, cost 0.7 GB more memory).
    spawn_opt =
      if opts[:watch], do: [], else: [min_heap_size: 233 + :rand.uniform(@passive_heap_spread)]

    GenServer.start(__MODULE__, {guild, user_id, opts}, spawn_opt: spawn_opt)
  end

  @doc """
  What the session saw: `%{rows: window copy, first_seq: first event seq, last_seq: last
  event seq, events: count, gaps: events out of order or repeated}`.
  """
  @spec report(GenServer.server()) :: map()
  def report(session), do: GenServer.call(session, :report)

  @impl GenServer
  def init({guild, user_id, opts}) do
    {:ok, rows} = Guild.connect(guild, user_id, self(), watch: opts[:watch])
    if opts[:watch], do: desynchronize_collections(@active_garbage_cells)

    {:ok,
     %{
       window: opts[:watch],
       rows: rows,
       stats: opts[:stats],
       first_seq: nil,
       last_seq: nil,
       events: 0,
       gaps: 0,
       relay_seq: 0
     }}
  end

  @impl GenServer
  def handle_call(:report, _from, state) do
    {:reply, Map.take(state, [:rows, :first_seq, :last_seq, :events, :gaps]), state}
  end

  @impl GenServer
  def handle_info({:member_list_ops, _guild, _seq, range, ops}, %{window: range} = state) do
    {:noreply, %{state | rows: Enum.reduce(ops, state.rows, &apply_op(&1, &2, range))}}
  end

  # The rows of a watched window, from a relay guild, before any op for it.
  def handle_info({:member_list_sync, _guild, _seq, range, rows}, %{window: range} = state),
    do: {:noreply, %{state | rows: rows}}

  # Through a relay: the relay's seq only grows; the guild's seq may skip the events of
  # channels the session may not see.
  def handle_info({:guild_event, guild, relay_seq, {:stamp, seq, sent_at, event}}, state) do
    if state.window == nil and state.stats, do: Stats.count(state.stats, :mentions)
    order = if relay_seq > state.relay_seq, do: 0, else: 1
    {:noreply, state} = handle_info({:guild_event, guild, seq, sent_at, event}, state)
    {:noreply, %{state | relay_seq: relay_seq, gaps: state.gaps + order}}
  end

  def handle_info({:passive_update, _guild, _seq, _channels}, state) do
    if state.stats, do: Stats.count(state.stats, :passive_updates)
    {:noreply, state}
  end

  def handle_info({:guild_event, _guild, seq, sent_at, _event}, state) do
    if state.stats, do: Stats.record(state.stats, seq, :os.perf_counter(:nanosecond) - sent_at)
    gap = if state.last_seq && seq <= state.last_seq, do: 1, else: 0

    {:noreply,
     %{
       state
       | first_seq: state.first_seq || seq,
         last_seq: seq,
         events: state.events + 1,
         gaps: state.gaps + gap
     }}
  end

  # Active sessions that start alike and are sent the same messages fill their heaps on
  # the same message, and all collect garbage on it: 20,000 of 20,000 collected on one
  # event, which delays that event for all of them. Garbage of a random size, left now,
  # puts each session at its own point of the cycle (later collections keep the offset,
  # since the sessions' live data stays alike).
  defp desynchronize_collections(cells) do
    _garbage = :lists.duplicate(:rand.uniform(cells), 0)
    :ok
  end

  # The client rule of GuildKit.MemberList: keep exactly the window's rows, apply ops in
  # order, drop rows pushed past the end by an insert.
  defp apply_op({:insert, index, row}, rows, {first, last}),
    do: rows |> List.insert_at(index - first, row) |> Enum.take(last - first + 1)

  defp apply_op({:update, index, row}, rows, {first, _}),
    do: List.replace_at(rows, index - first, row)

  defp apply_op({:delete, index}, rows, {first, _}), do: List.delete_at(rows, index - first)
  # The plain-OTP guild re-sends whole windows.
  defp apply_op({:sync, rows}, _rows, _range), do: rows

  defmodule Stats do
    @moduledoc """
    Per-node delivery statistics, shared by the sessions of a node without messages:
    for each recent event, the longest time any session took to receive it. Only
    lock-free `:atomics` are touched on the sessions' path.
    """

    @enforce_keys [:latest, :size, :counters]
    defstruct [:latest, :size, :counters]

    @typedoc "A statistics table."
    @type t :: %__MODULE__{
            latest: :atomics.atomics_ref(),
            size: pos_integer(),
            counters: :counters.counters_ref()
          }

    @counters [:passive_updates, :mentions]

    @doc "A table for the last `size` events."
    @spec new(pos_integer()) :: t()
    def new(size \\ 1_000_000) do
      %__MODULE__{
        latest: :atomics.new(size, signed: false),
        size: size,
        counters: :counters.new(length(@counters), [:write_concurrency])
      }
    end

    @doc "Counts one passive update or one mention received by a passive session."
    @spec count(t(), :passive_updates | :mentions) :: :ok
    def count(%__MODULE__{counters: counters}, what),
      do: :counters.add(counters, index(what), 1)

    @doc "The counts of `count/2`."
    @spec counts(t()) :: %{passive_updates: non_neg_integer(), mentions: non_neg_integer()}
    def counts(%__MODULE__{counters: counters}),
      do: Map.new(@counters, &{&1, :counters.get(counters, index(&1))})

    defp index(what), do: Enum.find_index(@counters, &(&1 == what)) + 1

    @doc "Records that a session received event `seq` after `ns` nanoseconds."
    @spec record(t(), pos_integer(), integer()) :: :ok
    def record(%__MODULE__{latest: latest, size: size}, seq, ns) do
      bump(latest, rem(seq, size) + 1, max(ns, 1))
    end

    defp bump(latest, index, ns) do
      current = :atomics.get(latest, index)

      if ns > current and :atomics.compare_exchange(latest, index, current, ns) != :ok do
        bump(latest, index, ns)
      else
        :ok
      end
    end

    @doc "The longest delivery time of each event in `seqs` that was recorded, in ns."
    @spec slowest(t(), Enumerable.t()) :: [{pos_integer(), pos_integer()}]
    def slowest(%__MODULE__{latest: latest, size: size}, seqs) do
      for seq <- seqs, ns = :atomics.get(latest, rem(seq, size) + 1), ns > 0, do: {seq, ns}
    end
  end
end

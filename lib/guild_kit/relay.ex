defmodule GuildKit.Relay do
  # Commands queued for one relay are sent in one message once they weigh this much (a
  # command weighs 1 plus the rows it carries), so no batch grows past a few thousand
  # terms, and copying one never holds the guild long.
  @batch_weight 1_024
  @default_supervisor GuildKit.Relay.Supervisor
  @max_window 0xFFFF_FFFF_FFFF_FFFF
  # How long connect/5 waits for a relay started on another node to announce itself
  # before it goes on without (the start then completes in handle_info/2), and how long
  # such a start may take in all before its sessions are told it failed.
  @start_wait_ms 4
  @start_deadline_ms 5_000

  @moduledoc """
  Relays and passive sessions: the guild hands its connected sessions to relay
  processes, so that an event costs the guild O(relays + nodes), not O(sessions).

  A relay is a process on the sessions' own node holding up to `max_sessions` of them
  in a `GuildKit.Audience`, with a copy of the guild's `GuildKit.Permissions`. It
  monitors its sessions, checks every event's permissions for all of them in one native
  call, and sends to them locally. The guild keeps only this handle: a struct in its
  state with a few words per session (which relay has it, and whether it is active).

      iex> alias GuildKit.{Permissions, Relay}
      iex> perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:general, [])
      iex> relays = Relay.new(:doc_guild, permissions: perms)
      iex> {:ok, relays} = Relay.connect(relays, self(), :ann, [], active: true)
      iex> {seq, _relays} = Relay.dispatch(relays, :hello, to: {:channel, :general})
      iex> receive do: ({:guild_event, :doc_guild, ^seq, :hello} -> :got)
      :got

  A guild creates the handle in its `init/1`, calls `connect/5`, `set_active/4`,
  `disconnect/2`, `update_member/3`, `put_permissions/2`, `dispatch/3` and
  `dispatch_ops/2` as things happen, and passes every message it does not handle itself
  to `handle_info/2`, which is how the handle learns of exits, crashes and lost nodes:

      def handle_info(message, state) do
        case GuildKit.Relay.handle_info(message, state.relays) do
          {:ok, relays} -> {:noreply, %{state | relays: relays}}
          :ignore -> {:noreply, state}
        end
      end

  A handle belongs to the process that created it (the guild): relays monitor that
  process and stop when it exits, and report to it.

  ## What a session receives

    * `{:guild_event, guild_id, seq, event}` - an event of `dispatch/3`, if the session
      is active (or mentioned) and may see it;
    * `{:member_list_ops, guild_id, seq, window, ops}` - the ops of `dispatch_ops/2` for
      a window the session watches, if it is active;
    * `{:member_list_sync, guild_id, seq, window, rows}` - the rows of a watched window,
      when `connect/5` or `set_active/4` was given `rows:`; `seq` is the last seq
      assigned before, so the events and ops that follow have greater ones;
    * `{:passive_update, guild_id, seq, %{channel_id => last_seq}}` - for a passive
      session, at most once per `passive_interval`: the channels it may see (with
      `VIEW_CHANNEL`) that had events since its last passive update from that relay
      (and, for its first one there, since it connected or became passive: never an
      event it got as an active session or from the relay it was on before), each
      with the seq of its latest event; `seq` is the last seq the relay had seen.
      Nothing is sent when there were none. A relay sends them to a sixteenth of its
      sessions at a time (by a hash of the pid), every `passive_interval / 16` ms, so
      that its passive sessions never all wait in the run queue at once (fewer parts
      when `passive_interval` is under 16 ms);
    * `{:guild_relay_down, guild_id}` - its relay was lost (see "Faults"): the session
      is no longer connected, and should connect again. A session that had just
      disconnected can get it too: events dispatched before its disconnect may then
      be missing.

  `seq` is the guild's sequence number, assigned once per `dispatch/3` and
  `dispatch_ops/2` (and returned by them), so a session can detect gaps and duplicates.

  ## Guarantees

    * **Order.** A session gets every message meant for it exactly once while it is
      connected, in seq order: across `set_active/4` switches, across `update_member/3`
      and `put_permissions/2` (an event dispatched after the change is filtered by the
      new roles and permissions), and across relays on several nodes. Every message the
      guild sends a relay, commands and events alike, goes through `GuildKit.Fanout`
      under the guild's partitioner key (`{GuildKit.Relay, guild_id}`), which keeps them
      in the order sent for each relay; a relay handles them in that order and sends to
      its sessions itself. Commands for one relay are batched in the handle and always
      sent before the next event or ops (or on the guild's next `handle_info/2` of the
      flush message the handle sends itself).
    * **Only what it may see.** A passive session gets no `:guild_event` unless it is
      mentioned and may see the channel. An active session gets an event with a channel
      filter if and only if `GuildKit.Permissions.compute/4` grants it the required bits
      with its roles at the time of the dispatch; `to: :all` reaches every active
      session (and the mentioned passive ones).
    * **A session exit** is seen by its relay (a monitor), which reports exits to the
      guild in batches, a few ms after the first: never one message per session.

  ## Faults, and what the guild sees

    * **A relay crashes.** Its supervisor restarts it; the guild's `handle_info/2` gets
      the old relay's `:DOWN`: each of its sessions is sent `{:guild_relay_down,
      guild_id}` and removed from the handle. So is each session that disconnected from
      it but whose disconnect it had not yet confirmed (it confirms in its next report,
      within a few ms of carrying it out). The old relay may have died with events for
      such a session still queued, and the message tells the session that events
      dispatched before its disconnect may be missing. The restarted relay (without
      sessions) announces itself and is taken back, with the current permissions; new
      sessions can go to it. The other relays, and their sessions, lose nothing.
    * **A node goes down.** The guild gets the `:DOWN` of each relay of that node (with
      reason `:noconnection`), and the relay's sessions are removed the same way (the
      `:guild_relay_down` sent to them is dropped, as they are gone). Dispatches never
      block on the node: `GuildKit.Fanout` drops what is meant for a node that is not
      connected.
    * **A node answers slowly, or not at all.** A relay started on another node has
      #{@start_wait_ms} ms to announce itself; after that `connect/5` returns without it, the
      session is counted on it, and what the guild sends it waits in the handle until
      its announcement reaches `handle_info/2`, then goes out in order, in one message.
      If the start fails, the node is lost first, or the relay has not announced itself
      within #{div(@start_deadline_ms, 1000)} s, its sessions are sent `{:guild_relay_down,
      guild_id}` and removed (a relay that announces itself later is taken back,
      without sessions). So no call waits on a node for more than a few ms.
    * **The guild exits.** Its relays see it (a monitor) and stop.
    * **Losses.** What `GuildKit.Fanout` loses (a partitioner or sender killed with
      messages in flight, a broken connection) a session does not get; its seq shows
      the gap.

  ## Costs

  | operation | guild time |
  |---|---|
  | `connect/5`, `disconnect/2`, `set_active/4` | O(log sessions), plus the rows |
  | a relay's start (in `connect/5`, when no relay of the node has room) | one call to the node's supervisor; at most #{@start_wait_ms} ms on another node |
  | `update_member/3`, `put_permissions/2` | one send per node; O(permissions) for the second |
  | `dispatch/3`, `dispatch_ops/2` | one send per node: O(relays) |
  | `handle_info/2` of a report | O(exits and disconnects reported) |
  | `handle_info/2` of a relay's `:DOWN` | O(sessions + disconnects not yet confirmed), once |
  | `stats/1` | O(relays) |

  A relay holds only its own sessions' member ids, roles, flags and windows, never the
  guild's members: creating one and connecting sessions to it costs the guild O(those
  sessions), one connect at a time. Figures are in `bench/RESULTS.md`.
  """

  alias GuildKit.{Audience, Fanout, Permissions}
  alias GuildKit.Audience.Check

  @relay_modules [GuildKit.Relay.Server, Audience, Permissions, GuildKit.Native]

  @enforce_keys [
    :guild_id,
    :guild,
    :tag,
    :key,
    :fanout,
    :supervisor,
    :max_sessions,
    :passive_interval,
    :permissions,
    :options
  ]
  defstruct @enforce_keys ++
              [
                version: 0,
                seq: 0,
                events: 0,
                deliveries: 0,
                next_no: 0,
                next_leave: 0,
                # session pid => relay number * 2 + 1 if active
                sessions: %{},
                # disconnected session pid => {the relay it was on, the disconnect's
                # number}, until that relay confirms the disconnect (it has then sent the
                # session all it had for it), the session exits or the relay is lost. A
                # session connected again meanwhile goes back to that relay, behind what
                # it still has to send (see connect/5); a relay lost meanwhile tells it.
                left: %{},
                # relay number => %{pid, node, ref, sessions, active}
                relays: %{},
                # relay pid => relay number
                by_pid: %{},
                # node => relay numbers, oldest first
                nodes: %{},
                # every relay pid, for dispatches
                pids: [],
                # relay number => {weight, commands, newest first}
                pending: %{},
                # relay number of a start on another node that has not answered
                # within @start_wait_ms => {its start reference, the messages for it,
                # newest first, sent when it announces itself}
                starting: %{},
                flush_sent: false
              ]

  @typedoc "The guild-side handle of a guild's relays."
  @opaque t :: %__MODULE__{}

  @typedoc "A watched member-list window, as in `GuildKit.MemberList`."
  @type window :: {non_neg_integer(), non_neg_integer()}

  @typedoc "Who an event is for."
  @type audience_filter ::
          :all | {:channel, term()} | {:channel, term(), Permissions.bits()}

  @doc """
  A child spec for a relay supervisor, for a supervision tree: `{GuildKit.Relay, name:
  MyApp.Relays}`. A relay supervisor starts a guild's relays on its node; the
  `:guild_kit` application runs one named `GuildKit.Relay.Supervisor` on every node,
  unless `config :guild_kit, start_relay_supervisor: false`. A guild whose handle was
  created with `supervisor: MyApp.Relays` starts its relays under the supervisor of that
  name on each node, which must be running there.

  ## Options

    * `:name` - the supervisor's registered name (default `GuildKit.Relay.Supervisor`).

  A supervisor lets each relay crash often (1,000 restarts a second in all) before it
  gives up.

  ## Examples

      iex> GuildKit.Relay.child_spec(name: MyApp.Relays).id
      MyApp.Relays

      iex> GuildKit.Relay.child_spec(name: "relays")
      ** (ArgumentError) expected :name to be an atom, got: "relays"

  ## Performance

  O(1).
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    name = supervisor_name!(opts)
    %{id: name, start: {__MODULE__, :start_link, [[name: name]]}, type: :supervisor}
  end

  @doc """
  Starts a relay supervisor (see `child_spec/1`) linked to the caller.

  ## Examples

      iex> {:ok, pid} = GuildKit.Relay.start_link(name: DocRelays)
      iex> Supervisor.stop(pid)
      :ok

  ## Performance

  O(1).
  """
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts) do
    # Loaded now rather than in the first relay's start, where a guild on another node
    # would wait for the code loading (some 4 ms in interactive mode).
    Enum.each(@relay_modules, &Code.ensure_loaded!/1)

    DynamicSupervisor.start_link(
      name: supervisor_name!(opts),
      strategy: :one_for_one,
      max_restarts: 1_000,
      max_seconds: 1
    )
  end

  defp supervisor_name!(opts) do
    case keyword!(opts, name: @default_supervisor)[:name] do
      name when is_atom(name) and name not in [nil, true, false] ->
        name

      other ->
        raise ArgumentError,
              "expected :name to be an atom, got: #{GuildKit.Describe.describe(other)}"
    end
  end

  @doc """
  Returns a handle for the relays of guild `guild_id`, owned by the calling process (the
  guild). No relay is started until a session connects.

  ## Options

    * `:max_sessions` - sessions per relay, at most `GuildKit.Audience.max_sessions/0`
      (default 15,000);
    * `:permissions` - a `GuildKit.Permissions` (default: `@everyone` has every
      permission, so everyone may see everything);
    * `:passive_interval` - ms between a relay's passive updates (default 1,000);
    * `:supervisor` - the name of the relay supervisor to start relays under on each
      node (default `GuildKit.Relay.Supervisor`, the application's; see `child_spec/1`);
    * `:fanout` - the `GuildKit.Fanout` instance to send through (default
      `GuildKit.Fanout`).

  ## Examples

      iex> relays = GuildKit.Relay.new(:g, max_sessions: 100, passive_interval: 500)
      iex> GuildKit.Relay.stats(relays).sessions
      0

      iex> GuildKit.Relay.new(:g, max_sessions: 0)
      ** (ArgumentError) expected :max_sessions to be an integer in 1..65536, got: 0

  ## Performance

  O(permissions): they are exported once for relays on other nodes.
  """
  @spec new(term(), keyword()) :: t()
  def new(guild_id, opts \\ []) do
    given = opts
    opts = options!(opts)

    # Built only when not given; `nil` is not a way to ask for it.
    permissions =
      case Keyword.fetch(given, :permissions) do
        :error -> Permissions.new(everyone: Permissions.all())
        {:ok, %Permissions{} = permissions} -> permissions
        {:ok, other} -> raise_not_permissions(other)
      end

    max = Audience.max_sessions()

    max_sessions =
      case opts[:max_sessions] do
        n when is_integer(n) and n >= 1 and n <= max ->
          n

        other ->
          raise ArgumentError,
                "expected :max_sessions to be an integer in 1..#{max}, got: #{GuildKit.Describe.describe(other)}"
      end

    interval =
      case opts[:passive_interval] do
        ms when is_integer(ms) and ms >= 1 ->
          ms

        other ->
          raise ArgumentError,
                "expected :passive_interval to be a positive integer (ms), got: #{GuildKit.Describe.describe(other)}"
      end

    for key <- [:supervisor, :fanout],
        not (is_atom(opts[key]) and opts[key] not in [nil, true, false]) do
      raise ArgumentError,
            "expected #{GuildKit.Describe.describe(key)} to be an atom, got: #{GuildKit.Describe.describe(opts[key])}"
    end

    %__MODULE__{
      guild_id: guild_id,
      guild: self(),
      tag: make_ref(),
      key: {__MODULE__, guild_id},
      fanout: opts[:fanout],
      supervisor: opts[:supervisor],
      max_sessions: max_sessions,
      passive_interval: interval,
      permissions: permissions,
      options: Permissions.to_options(permissions)
    }
  end

  defp options!(opts) do
    keyword!(opts,
      max_sessions: 15_000,
      permissions: nil,
      passive_interval: 1_000,
      supervisor: @default_supervisor,
      fanout: Fanout
    )
  end

  @doc """
  Connects the session `session_pid` of `member_id`, holding `role_ids`. Returns
  `{:ok, relays}`.

  The session goes to a relay with room on the session's own node; a relay is started
  there when none has room. A session that was disconnected and is still alive goes
  back to the relay it left, if that relay lives (even past `max_sessions`, up to
  `GuildKit.Audience.max_sessions/0`), so that nothing that relay still has to send it
  can arrive after newer messages from another relay. The handle remembers that relay
  (one entry per such session) until the relay confirms the disconnect, the session
  exits or the relay is lost. Raises `ArgumentError` when the session is already
  connected. When no relay can be started on the session's node (it is down), the
  session is sent `{:guild_relay_down, guild_id}` and is not connected; when that
  node answers late, the session is connected, and told later if the start fails (see
  "Faults").

  ## Options

    * `:active` - whether the session gets events and ops (default `false`);
    * `:watch` - the member-list windows it watches (default `[]`);
    * `:rows` - a function returning the rows of a window (from the guild's
      `GuildKit.MemberList`): the session first gets a `{:member_list_sync, ...}` for
      each watched window.

  ## Examples

      iex> relays = GuildKit.Relay.new(:g)
      iex> rows = fn {0, 99} -> [{:member, :ann}] end
      iex> {:ok, relays} = GuildKit.Relay.connect(relays, self(), :ann, [:mods], active: true, watch: [{0, 99}], rows: rows)
      iex> GuildKit.Relay.stats(relays).active
      1
      iex> {1, _relays} = GuildKit.Relay.dispatch(relays, :hi)
      iex> receive do: ({:member_list_sync, :g, 0, {0, 99}, rows} -> rows)
      [{:member, :ann}]
      iex> receive do: ({:guild_event, :g, 1, :hi} -> :then_the_event)
      :then_the_event

  ## Performance

  O(log sessions + roles + windows), plus `rows` and, when a relay is started, one
  call to the node's relay supervisor (on another node, a wait of at most
  #{@start_wait_ms} ms: see "Faults").
  """
  @spec connect(t(), pid(), term(), [term()], keyword()) :: {:ok, t()}
  def connect(relays, session_pid, member_id, role_ids, opts \\ [])

  def connect(%__MODULE__{} = relays, session_pid, member_id, role_ids, opts) do
    pid!(session_pid)
    ids!(member_id, role_ids)
    opts = keyword!(opts, active: false, watch: [], rows: nil)
    active = boolean!(opts[:active], ":active")
    watch = Check.windows!(opts[:watch])
    rows = rows_fun!(opts[:rows])

    if Map.has_key?(relays.sessions, session_pid) do
      raise ArgumentError,
            "session #{GuildKit.Describe.describe(session_pid)} is already connected"
    end

    syncs = syncs(rows, watch)

    case relay_for(relays, session_pid) do
      {:ok, relays, no} ->
        command = {:connect, session_pid, member_id, role_ids, active, watch, syncs, relays.seq}
        relays = count(relays, no, 1, if(active, do: 1, else: 0))
        code = no * 2 + if(active, do: 1, else: 0)

        relays = %{
          relays
          | sessions: Map.put(relays.sessions, session_pid, code),
            left: Map.delete(relays.left, session_pid)
        }

        {:ok, enqueue(relays, no, command, syncs)}

      {:error, relays} ->
        send(session_pid, {:guild_relay_down, relays.guild_id})
        {:ok, relays}
    end
  end

  def connect(other, _session_pid, _member_id, _role_ids, _opts), do: raise_not_relays(other)

  @doc """
  Disconnects a session: it gets nothing dispatched after the call. What was
  dispatched before still reaches it from its relay, unless that relay is lost before
  it has carried out the disconnect: then the session is sent `{:guild_relay_down,
  guild_id}` (see "Faults"). Returns `{:ok, relays}`; a session that is not connected
  (it exited, say) is left alone.

  ## Examples

      iex> {:ok, relays} = GuildKit.Relay.connect(GuildKit.Relay.new(:g), self(), :ann, [])
      iex> {:ok, relays} = GuildKit.Relay.disconnect(relays, self())
      iex> GuildKit.Relay.stats(relays).sessions
      0

  ## Performance

  O(log sessions).
  """
  @spec disconnect(t(), pid()) :: {:ok, t()}
  def disconnect(%__MODULE__{} = relays, session_pid) do
    pid!(session_pid)

    case Map.pop(relays.sessions, session_pid) do
      {nil, _} ->
        {:ok, relays}

      {code, sessions} ->
        no = div(code, 2)
        leave = relays.next_leave

        relays = %{
          relays
          | sessions: sessions,
            left: Map.put(relays.left, session_pid, {no, leave}),
            next_leave: leave + 1
        }

        relays = count(relays, no, -1, -rem(code, 2))
        {:ok, enqueue(relays, no, {:disconnect, session_pid, leave}, [])}
    end
  end

  def disconnect(other, _session_pid), do: raise_not_relays(other)

  @doc """
  Makes a session active (it gets events and the ops of its windows) or passive (it
  gets passive updates, and mentions). Returns `{:ok, relays}`; a session that is not
  connected is left alone.

  ## Options

    * `:watch` - the windows it watches from now on (default: those it had);
    * `:rows` - as in `connect/5`, for the windows of `:watch` (which it needs): the
      session first gets a `{:member_list_sync, ...}` for each.

  Events and ops dispatched after the call follow the new activity, in seq order after
  everything the session got before.

  ## Examples

      iex> {:ok, relays} = GuildKit.Relay.connect(GuildKit.Relay.new(:g), self(), :ann, [])
      iex> {:ok, relays} = GuildKit.Relay.set_active(relays, self(), true, watch: [{0, 99}])
      iex> GuildKit.Relay.stats(relays).active
      1

  ## Performance

  O(log sessions + windows), plus `rows`.
  """
  @spec set_active(t(), pid(), boolean(), keyword()) :: {:ok, t()}
  def set_active(relays, session_pid, active?, opts \\ [])

  def set_active(%__MODULE__{} = relays, session_pid, active?, opts) do
    pid!(session_pid)
    active = boolean!(active?, "active?")
    opts = keyword!(opts, watch: nil, rows: nil)
    watch = if opts[:watch] == nil, do: nil, else: Check.windows!(opts[:watch])
    rows = rows_fun!(opts[:rows])

    if rows && watch == nil do
      raise ArgumentError, ":rows needs :watch, the windows whose rows the session gets"
    end

    case relays.sessions do
      %{^session_pid => code} ->
        syncs = syncs(rows, watch || [])
        no = div(code, 2)
        relays = count(relays, no, 0, if(active, do: 1, else: 0) - rem(code, 2))
        new_code = no * 2 + if(active, do: 1, else: 0)
        relays = %{relays | sessions: Map.put(relays.sessions, session_pid, new_code)}
        command = {:set_active, session_pid, active, watch, syncs, relays.seq}
        {:ok, enqueue(relays, no, command, syncs)}

      _ ->
        {:ok, relays}
    end
  end

  def set_active(other, _session_pid, _active?, _opts), do: raise_not_relays(other)

  @doc """
  Gives every session of `member_id` these role ids, on every relay. Returns `{:ok,
  relays}`. Events dispatched after the call are filtered by the new roles.

  ## Examples

      iex> {:ok, relays} = GuildKit.Relay.connect(GuildKit.Relay.new(:g), self(), :ann, [])
      iex> {:ok, _relays} = GuildKit.Relay.update_member(relays, :ann, [:mods])

  ## Performance

  One send per node (O(relays)), whichever relays hold the member's sessions.
  """
  @spec update_member(t(), term(), [term()]) :: {:ok, t()}
  def update_member(%__MODULE__{} = relays, member_id, role_ids) do
    ids!(member_id, role_ids)
    {:ok, broadcast(relays, {:update_member, member_id, role_ids}, nil)}
  end

  def update_member(other, _member_id, _role_ids), do: raise_not_relays(other)

  @doc """
  Replaces the guild's permissions on every relay. Returns `{:ok, relays}`. Events
  dispatched after the call are filtered by the new permissions.

  Relays of the guild's node get the value itself; relays of other nodes get its
  `GuildKit.Permissions.to_options/1` and rebuild it there. Nothing is sent when the
  permissions are the same as before.

  ## Examples

      iex> relays = GuildKit.Relay.new(:g)
      iex> perms = GuildKit.Permissions.new(everyone: 0x400) |> GuildKit.Permissions.put_channel(:general, [])
      iex> {:ok, _relays} = GuildKit.Relay.put_permissions(relays, perms)

  ## Performance

  O(roles + channels + overwrites) to export them, and one or two sends per node.
  """
  @spec put_permissions(t(), Permissions.t()) :: {:ok, t()}
  def put_permissions(%__MODULE__{} = relays, permissions) do
    # Permissions.to_options/1 raises the ArgumentError for anything else.
    options = Permissions.to_options(permissions)

    if options == relays.options do
      {:ok, %{relays | permissions: permissions}}
    else
      relays = %{relays | permissions: permissions, options: options, version: relays.version + 1}
      {:ok, broadcast(relays, {:permissions, permissions}, {:permissions, options})}
    end
  end

  def put_permissions(other, _permissions), do: raise_not_relays(other)

  @doc """
  Dispatches `event` to the sessions that should get it, and returns `{seq, relays}`
  with the seq assigned to it.

  ## Options

    * `:to` - `:all` (default: every active session), `{:channel, channel_id}` (the
      active sessions whose member has `VIEW_CHANNEL` there) or `{:channel, channel_id,
      required_bits}` (all of those bits). A channel the permissions do not have raises
      `ArgumentError`;
    * `:mentions` - member ids whose passive sessions get the event too, if they may
      see it (default `[]`).

  Passive sessions that may see the channel get it in their next passive update.

  ## Examples

      iex> {:ok, relays} = GuildKit.Relay.connect(GuildKit.Relay.new(:g), self(), :ann, [])
      iex> {1, relays} = GuildKit.Relay.dispatch(relays, :unseen)
      iex> {2, _relays} = GuildKit.Relay.dispatch(relays, :mention, mentions: [:ann])
      iex> receive do: ({:guild_event, :g, seq, event} -> {seq, event})
      {2, :mention}

  ## Performance

  One send per node, O(relays), however many sessions get the event.
  """
  @spec dispatch(t(), term(), keyword()) :: {pos_integer(), t()}
  def dispatch(relays, event, opts \\ [])

  def dispatch(%__MODULE__{} = relays, event, opts) do
    opts = keyword!(opts, to: :all, mentions: [])
    filter = filter!(opts[:to], relays)
    mentions = list!(opts[:mentions], ":mentions", "a list of member ids")
    relays = flush(relays)
    seq = relays.seq + 1
    message = {__MODULE__, :event, seq, event, filter, mentions}
    send_to_relays(relays, relays.pids, message)
    {seq, %{hold(relays, message) | seq: seq, events: relays.events + 1}}
  end

  def dispatch(other, _event, _opts), do: raise_not_relays(other)

  @doc """
  Forwards member-list changes, the `[{window, ops}]` that `GuildKit.MemberList`
  returns, to the active sessions watching each window, and returns `{seq, relays}`.
  One send per node, however many windows and sessions.

  ## Examples

      iex> {:ok, relays} = GuildKit.Relay.connect(GuildKit.Relay.new(:g), self(), :ann, [], active: true, watch: [{0, 9}])
      iex> {1, _relays} = GuildKit.Relay.dispatch_ops(relays, [{{0, 9}, [{:delete, 3}]}])
      iex> receive do: ({:member_list_ops, :g, 1, {0, 9}, ops} -> ops)
      [{:delete, 3}]

  ## Performance

  One send per node, O(relays) plus the copy of the changes.
  """
  @spec dispatch_ops(t(), [{window(), list()}]) :: {pos_integer(), t()}
  def dispatch_ops(%__MODULE__{} = relays, changes) do
    changes!(changes)
    relays = flush(relays)
    seq = relays.seq + 1

    relays =
      if changes == [] do
        relays
      else
        message = {__MODULE__, :ops, seq, changes}
        send_to_relays(relays, relays.pids, message)
        hold(relays, message)
      end

    {seq, %{relays | seq: seq}}
  end

  def dispatch_ops(other, _changes), do: raise_not_relays(other)

  @doc """
  Handles a message the guild received: `{:ok, relays}` for one that belongs to the
  relays (a relay's report of exits and deliveries, a relay's `:DOWN`, a restarted or
  late relay's announcement, a late start's failure, the handle's own flush),
  `:ignore` for any other.

  ## Examples

      iex> GuildKit.Relay.handle_info(:unrelated, GuildKit.Relay.new(:g))
      :ignore

  ## Performance

  O(exits and disconnects reported) for a report; O(sessions + disconnects not yet
  confirmed) once for a lost relay or a failed start; one send of what waited for a
  late relay.
  """
  @spec handle_info(term(), t()) :: {:ok, t()} | :ignore
  def handle_info(message, %__MODULE__{tag: tag} = relays) do
    case message do
      {__MODULE__, ^tag, :flush} ->
        {:ok, flush(%{relays | flush_sent: false})}

      {__MODULE__, ^tag, :report, pid, done, deliveries} ->
        {:ok, report(relays, pid, done, deliveries)}

      {__MODULE__, ^tag, :up, pid, version, start} ->
        case starting_no(relays, start) do
          nil -> {:ok, adopt(relays, pid, version)}
          no -> {:ok, started(relays, no, pid)}
        end

      {__MODULE__, ^tag, :start_failed, start} ->
        case starting_no(relays, start) do
          nil -> {:ok, relays}
          no -> {:ok, relay_down(relays, no)}
        end

      {:DOWN, ref, :process, pid, _reason} when is_map_key(relays.by_pid, pid) ->
        no = Map.fetch!(relays.by_pid, pid)
        if relays.relays[no].ref == ref, do: {:ok, relay_down(relays, no)}, else: :ignore

      _other ->
        :ignore
    end
  end

  def handle_info(_message, other), do: raise_not_relays(other)

  @doc """
  Returns figures about the relays:

    * `:relays` - the relay pids;
    * `:starting` - relays started on other nodes that have not announced themselves
      yet (see "Faults"; they are counted in `:nodes`, and their sessions in `:sessions`);
    * `:sessions`, `:active`, `:passive` - connected sessions;
    * `:leaving` - disconnected sessions whose relay has not yet confirmed the
      disconnect (were it lost, they would be sent `{:guild_relay_down, guild_id}`);
    * `:nodes` - `%{node => %{relays: n, sessions: n, active: n, passive: n}}`;
    * `:seq` - the last seq assigned;
    * `:events` - `dispatch/3` calls;
    * `:deliveries` - messages the relays sent to sessions, as last reported (relays
      report at their passive ticks and with exits).

  ## Examples

      iex> stats = GuildKit.Relay.stats(GuildKit.Relay.new(:g))
      iex> {stats.relays, stats.sessions, stats.nodes}
      {[], 0, %{}}

  ## Performance

  O(relays).
  """
  @spec stats(t()) :: %{
          relays: [pid()],
          starting: non_neg_integer(),
          sessions: non_neg_integer(),
          active: non_neg_integer(),
          passive: non_neg_integer(),
          leaving: non_neg_integer(),
          nodes: %{node() => map()},
          seq: non_neg_integer(),
          events: non_neg_integer(),
          deliveries: non_neg_integer()
        }
  def stats(%__MODULE__{} = relays) do
    nodes =
      Map.new(relays.nodes, fn {node, nos} ->
        infos = Enum.map(nos, &Map.fetch!(relays.relays, &1))
        sessions = Enum.sum(Enum.map(infos, & &1.sessions))
        active = Enum.sum(Enum.map(infos, & &1.active))

        {node,
         %{relays: length(nos), sessions: sessions, active: active, passive: sessions - active}}
      end)

    active = nodes |> Map.values() |> Enum.map(& &1.active) |> Enum.sum()

    %{
      relays: Enum.reverse(relays.pids),
      starting: map_size(relays.starting),
      sessions: map_size(relays.sessions),
      active: active,
      passive: map_size(relays.sessions) - active,
      leaving: map_size(relays.left),
      nodes: nodes,
      seq: relays.seq,
      events: relays.events,
      deliveries: relays.deliveries
    }
  end

  def stats(other), do: raise_not_relays(other)

  ## Relays

  # A session connected again goes back to the relay it left, if that relay lives, even
  # when it is full (up to what an Audience holds): that relay may still have events
  # queued for it, and another relay could overtake them.
  defp relay_for(relays, session_pid) do
    with %{^session_pid => {no, _leave}} <- relays.left,
         %{^no => %{sessions: sessions}} <- relays.relays,
         true <- sessions < Audience.max_sessions() do
      {:ok, relays, no}
    else
      _ -> relay_with_room(relays, node(session_pid))
    end
  end

  defp relay_with_room(relays, node) do
    nos = Map.get(relays.nodes, node, [])

    case Enum.find(nos, &(relays.relays[&1].sessions < relays.max_sessions)) do
      nil -> start_relay(relays, node)
      no -> {:ok, relays, no}
    end
  end

  defp start_relay(relays, node) do
    start = make_ref()

    args = %{
      guild: relays.guild,
      guild_id: relays.guild_id,
      tag: relays.tag,
      start: start,
      passive_interval: relays.passive_interval,
      version: relays.version,
      # A Permissions value means nothing on another node: those rebuild it.
      permissions: if(node == node(), do: relays.permissions, else: relays.options)
    }

    spec = {GuildKit.Relay.Server, args}

    if node == node(),
      do: start_here(relays, spec),
      else: start_there(relays, node, spec, start)
  end

  defp start_here(relays, spec) do
    result =
      try do
        DynamicSupervisor.start_child(relays.supervisor, spec)
      catch
        :exit, {:noproc, _} ->
          raise ArgumentError,
                "the relay supervisor #{GuildKit.Describe.describe(relays.supervisor)} is not running on this " <>
                  "node: the :guild_kit application is stopped or was started with " <>
                  "start_relay_supervisor: false (then add {GuildKit.Relay, name: ...} to a " <>
                  "supervision tree and pass its name as :supervisor)"

        :exit, reason ->
          {:error, reason}
      end

    case result do
      {:ok, pid} ->
        {relays, no} = register(relays, pid)
        {:ok, relays, no}

      {:error, _reason} ->
        {:error, relays}
    end
  end

  # A node's supervisor is called from a process of its own, so that a node that is slow
  # or cut off (but not yet known to be down) holds the guild for @start_wait_ms at most.
  # The relay announces itself to the guild from its init; the caller says only when the
  # start failed. The caller lives no longer than the guild waits for the start: a
  # supervisor that never answers (suspended, say) would hold it forever.
  defp start_there(relays, node, spec, start) do
    %{guild: guild, tag: tag, supervisor: supervisor} = relays

    _ =
      spawn(fn ->
        {:ok, _timer} = :timer.kill_after(@start_deadline_ms)

        result =
          try do
            DynamicSupervisor.start_child({supervisor, node}, spec)
          catch
            :exit, reason -> {:error, reason}
          end

        with {:error, _reason} <- result, do: send(guild, {__MODULE__, tag, :start_failed, start})
      end)

    receive do
      {__MODULE__, ^tag, :up, pid, _version, ^start} ->
        {relays, no} = register(relays, pid)
        {:ok, relays, no}

      {__MODULE__, ^tag, :start_failed, ^start} ->
        {:error, relays}
    after
      @start_wait_ms ->
        {relays, no} = add_relay(relays, node)
        # Handled only if the relay has not announced itself by then.
        Process.send_after(guild, {__MODULE__, tag, :start_failed, start}, @start_deadline_ms)

        {:ok, %{relays | starting: Map.put(relays.starting, no, {start, []})}, no}
    end
  end

  # A relay number for a relay of `node`, with no pid yet.
  defp add_relay(relays, node) do
    no = relays.next_no
    info = %{pid: nil, node: node, ref: nil, sessions: 0, active: 0}

    relays = %{
      relays
      | next_no: no + 1,
        relays: Map.put(relays.relays, no, info),
        nodes: Map.update(relays.nodes, node, [no], &(&1 ++ [no]))
    }

    {relays, no}
  end

  defp register(relays, pid) do
    {relays, no} = add_relay(relays, node(pid))
    {started_pid(relays, no, pid), no}
  end

  defp started_pid(relays, no, pid) do
    info = %{Map.fetch!(relays.relays, no) | pid: pid, ref: Process.monitor(pid)}

    %{
      relays
      | relays: Map.put(relays.relays, no, info),
        by_pid: Map.put(relays.by_pid, pid, no),
        pids: [pid | relays.pids]
    }
  end

  # The relay number of the start `start`, while it has not answered; nil otherwise.
  # O(starting relays), which are few and only on a late answer.
  defp starting_no(relays, start) do
    Enum.find_value(relays.starting, fn
      {no, {^start, _held}} -> no
      _ -> nil
    end)
  end

  # A relay whose start had not answered announced itself: what waited for it goes out,
  # in order and in one message, before anything sent after.
  defp started(relays, no, pid) do
    {{_start, held}, starting} = Map.pop!(relays.starting, no)
    relays = started_pid(%{relays | starting: starting}, no, pid)
    if held != [], do: send_to_relays(relays, pid, {__MODULE__, :held, Enum.reverse(held)})
    relays
  end

  # Messages for every relay are kept for the relays still starting.
  defp hold(%{starting: starting} = relays, _message) when map_size(starting) == 0, do: relays

  defp hold(relays, message) do
    starting =
      Map.new(relays.starting, fn {no, {start, held}} -> {no, {start, [message | held]}} end)

    %{relays | starting: starting}
  end

  # A relay the handle did not start: its supervisor restarted it after a crash.
  defp adopt(relays, pid, version) do
    if Map.has_key?(relays.by_pid, pid) do
      relays
    else
      {relays, no} = register(relays, pid)

      if version == relays.version do
        relays
      else
        enqueue(relays, no, permissions_command(relays, node(pid)), [])
      end
    end
  end

  # The relay's sessions are told, and so are the sessions that left it without its
  # confirmation: it may have died with events for them still queued.
  defp relay_down(relays, no) do
    info = Map.fetch!(relays.relays, no)
    lost = for {pid, code} <- relays.sessions, div(code, 2) == no, do: pid
    unconfirmed = for {pid, {^no, _leave}} <- relays.left, do: pid
    told = lost ++ unconfirmed
    if told != [], do: send_to_sessions(relays, told, {:guild_relay_down, relays.guild_id})

    %{
      relays
      | sessions: Map.drop(relays.sessions, lost),
        left: Map.drop(relays.left, unconfirmed),
        relays: Map.delete(relays.relays, no),
        by_pid: Map.delete(relays.by_pid, info.pid),
        nodes: remove_relay(relays.nodes, info.node, no),
        pids: List.delete(relays.pids, info.pid),
        pending: Map.delete(relays.pending, no),
        starting: Map.delete(relays.starting, no)
    }
  end

  defp remove_relay(nodes, node, no) do
    case List.delete(Map.fetch!(nodes, node), no) do
      [] -> Map.delete(nodes, node)
      nos -> Map.put(nodes, node, nos)
    end
  end

  defp report(relays, pid, done, deliveries) do
    case relays.by_pid do
      %{^pid => no} ->
        relays = %{relays | deliveries: relays.deliveries + deliveries}
        Enum.reduce(done, relays, &reported(&2, no, &1))

      _ ->
        relays
    end
  end

  # A relay reports the sessions that exited, and the disconnects it has carried out
  # (`{session, leave}`): it has nothing more to send those sessions.
  defp reported(relays, no, {session, leave}) do
    case relays.left do
      %{^session => {^no, ^leave}} -> %{relays | left: Map.delete(relays.left, session)}
      _ -> relays
    end
  end

  defp reported(relays, no, session) do
    case relays do
      %{sessions: %{^session => code}} when div(code, 2) == no ->
        relays = %{relays | sessions: Map.delete(relays.sessions, session)}
        count(relays, no, -1, -rem(code, 2))

      %{left: %{^session => {^no, _leave}}} ->
        %{relays | left: Map.delete(relays.left, session)}

      _ ->
        relays
    end
  end

  defp count(relays, no, sessions, active) do
    info = Map.fetch!(relays.relays, no)
    info = %{info | sessions: info.sessions + sessions, active: info.active + active}
    %{relays | relays: Map.put(relays.relays, no, info)}
  end

  ## Sending, in one order per relay

  # Commands for one relay wait in the handle, to go in one message: before the next
  # event or ops, when they weigh enough, or on the flush message the handle sends its
  # guild.
  defp enqueue(relays, no, command, syncs) do
    weight = 1 + Enum.reduce(syncs, 0, fn {_window, rows}, sum -> sum + length(rows) end)

    {total, commands} = Map.get(relays.pending, no, {0, []})

    relays = %{
      relays
      | pending: Map.put(relays.pending, no, {total + weight, [command | commands]})
    }

    cond do
      total + weight >= @batch_weight ->
        flush_one(relays, no)

      relays.flush_sent ->
        relays

      true ->
        send(relays.guild, {__MODULE__, relays.tag, :flush})
        %{relays | flush_sent: true}
    end
  end

  defp flush(%{pending: pending} = relays) when map_size(pending) == 0, do: relays

  defp flush(relays) do
    Enum.reduce(Map.keys(relays.pending), relays, &flush_one(&2, &1))
  end

  defp flush_one(relays, no) do
    {{_weight, commands}, pending} = Map.pop!(relays.pending, no)
    message = {__MODULE__, :batch, Enum.reverse(commands)}
    relays = %{relays | pending: pending}

    case relays.starting do
      %{^no => {start, held}} ->
        %{relays | starting: Map.put(relays.starting, no, {start, [message | held]})}

      _ ->
        send_to_relays(relays, Map.fetch!(relays.relays, no).pid, message)
        relays
    end
  end

  # A command for every relay, after what each has pending: one send per node. Relays of
  # other nodes get `remote` instead when it is given.
  defp broadcast(relays, command, remote) do
    relays = flush(relays)

    if remote do
      {here, there} = Enum.split_with(relays.pids, &(node(&1) == node()))
      send_to_relays(relays, here, {__MODULE__, :batch, [command]})
      send_to_relays(relays, there, {__MODULE__, :batch, [remote]})
    else
      send_to_relays(relays, relays.pids, {__MODULE__, :batch, [command]})
    end

    # Only relays of other nodes are ever still starting.
    hold(relays, {__MODULE__, :batch, [remote || command]})
  end

  defp permissions_command(relays, node) when node == node(),
    do: {:permissions, relays.permissions}

  defp permissions_command(relays, _node), do: {:permissions, relays.options}

  defp send_to_relays(_relays, [], _message), do: :ok

  defp send_to_relays(relays, pids, message),
    do: Fanout.send(pids, message, key: relays.key, name: relays.fanout)

  defp send_to_sessions(relays, pids, message),
    do: Fanout.send(pids, message, key: relays.key, name: relays.fanout)

  defp syncs(nil, _watch), do: []

  defp syncs(rows, watch) do
    for window <- watch do
      case rows.(window) do
        list when is_list(list) ->
          {window, list}

        other ->
          raise ArgumentError,
                "expected :rows to return a list of rows, got: #{GuildKit.Describe.describe(other)}"
      end
    end
  end

  ## Input checks: all before anything changes

  defp filter!(:all, _relays), do: :all

  defp filter!({:channel, channel_id}, relays),
    do: filter!({:channel, channel_id, Permissions.view_channel()}, relays)

  defp filter!({:channel, channel_id, bits} = filter, relays)
       when is_integer(bits) and bits >= 0 and bits <= @max_window do
    if known_channel?(relays, channel_id) do
      filter
    else
      raise ArgumentError,
            "unknown channel #{GuildKit.Describe.describe(channel_id)}: the permissions have no such channel " <>
              "(put_permissions/2 with a channel added by GuildKit.Permissions.put_channel/3)"
    end
  end

  defp filter!(other, _relays) do
    raise ArgumentError,
          "expected :to to be :all, {:channel, channel_id} or {:channel, channel_id, " <>
            "required_bits} (bits an integer in 0..2^64-1), got: #{GuildKit.Describe.describe(other)}"
  end

  # An integer, atom or binary id is looked up in the exported channels: a NIF call
  # costs tens of µs when the caches are cold, as they are between events. Other ids
  # go to the NIF, whose ids are exact where a map key is not: in a map, -0.0 finds
  # 0.0, and {:c, -0.0} finds {:c, 0.0}.
  defp known_channel?(relays, channel_id)
       when is_integer(channel_id) or is_atom(channel_id) or is_binary(channel_id),
       do: Map.has_key?(relays.options[:channels], channel_id)

  defp known_channel?(relays, channel_id),
    do: Permissions.has_channel?(relays.permissions, channel_id)

  defp changes!(changes) do
    list!(changes, "changes", "a list of {window, ops}")

    Enum.each(changes, fn
      {window, ops} when is_list(ops) ->
        Check.windows!([window])

      other ->
        raise ArgumentError,
              "expected changes to be a list of {window, ops} (ops a list), got: #{GuildKit.Describe.describe(other)}"
    end)
  end

  defp keyword!(opts, defaults) do
    GuildKit.Describe.options!(opts, defaults)
  end

  defp pid!(pid) when is_pid(pid), do: :ok

  defp pid!(other),
    do: raise(ArgumentError, "expected a session pid, got: #{GuildKit.Describe.describe(other)}")

  defp boolean!(value, _what) when is_boolean(value), do: value

  defp boolean!(other, what),
    do:
      raise(
        ArgumentError,
        "expected #{what} to be a boolean, got: #{GuildKit.Describe.describe(other)}"
      )

  defp rows_fun!(nil), do: nil
  defp rows_fun!(fun) when is_function(fun, 1), do: fun

  defp rows_fun!(other) do
    raise ArgumentError,
          "expected :rows to be a function of one window returning its rows, got: #{GuildKit.Describe.describe(other)}"
  end

  defp list!(list, what, expected) do
    if is_list(list) and proper_list?(list) do
      list
    else
      raise ArgumentError,
            "expected #{what} to be #{expected}, got: #{GuildKit.Describe.describe(list)}"
    end
  end

  defp proper_list?([]), do: true
  defp proper_list?([_ | rest]), do: proper_list?(rest)
  defp proper_list?(_), do: false

  # The relays' audiences store the ids natively: they are checked here by the same
  # native encoding (budgeted in bytes, so a huge id is refused without holding the
  # guild's scheduler), so that a bad id raises in the guild instead of crashing a relay.
  defp ids!(member_id, role_ids) do
    _ = list!(role_ids, "role ids", "a list")
    storable!(member_id, [], "a member id", member_id)
    # Any storable member id will do beside the role ids: 0.
    storable!(0, role_ids, "role ids", role_ids)
  end

  defp storable!(member_id, role_ids, what, ids) do
    Check.ids!(member_id, role_ids)
  rescue
    error in ArgumentError ->
      reraise ArgumentError,
              "expected #{what} made of integers, floats, atoms, binaries, tuples, proper " <>
                "lists and maps, of at most 16 MiB encoded, got: " <>
                "#{GuildKit.Describe.describe(ids, limit: 5, printable_limit: 64)} " <>
                "(#{Exception.message(error)})",
              __STACKTRACE__
  end

  defp raise_not_relays(other),
    do:
      raise(
        ArgumentError,
        "expected a GuildKit.Relay handle, got: #{GuildKit.Describe.describe(other)}"
      )

  defp raise_not_permissions(other),
    do:
      raise(
        ArgumentError,
        "expected a GuildKit.Permissions, got: #{GuildKit.Describe.describe(other)}"
      )

  defimpl Inspect do
    def inspect(relays, _opts) do
      "#GuildKit.Relay<guild: #{Kernel.inspect(relays.guild_id)}, relays: " <>
        "#{map_size(relays.relays)}, sessions: #{map_size(relays.sessions)}>"
    end
  end
end

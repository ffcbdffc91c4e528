defmodule GuildKit.Examples.Guild.RelayToolkit do
  @moduledoc """
  The GuildKit guild with relays (see `GuildKit.Examples.Guild.Toolkit`), the way a
  guild of millions should be written:

    * the sidebar is one `GuildKit.MemberList`, as in
      `GuildKit.Examples.Guild.GuildKitToolkit`; each window a session asks for is
      watched once, the first time, so the list computes ops per window, not per
      session;
    * sessions are handed to `GuildKit.Relay`: relays on each session's node hold them,
      check permissions and send, so an event costs the guild one send per node. The
      guild keeps a few words per session;
    * sessions without a window are passive: they get passive updates and the messages
      that mention their user;
    * a message event goes to the sessions that may see its channel
      (`{:channel, channel_id}`, by the `:permissions` given to the guild), mentions
      included; member events go to every active session; a role change reaches the
      relays before the event that announces it.
  """
  @behaviour GuildKit.Examples.Guild.Toolkit

  alias GuildKit.{MemberList, Relay}
  alias GuildKit.Examples.Guild.GuildKitToolkit

  @enforce_keys [:sidebar, :relays]
  defstruct [:sidebar, :relays, watched: MapSet.new()]

  @impl true
  def new(guild_id, groups, members, opts) do
    %GuildKitToolkit{sidebar: sidebar} = GuildKitToolkit.new(guild_id, groups, members, opts)
    relay_opts = Keyword.take(opts, [:permissions, :max_sessions, :passive_interval])
    %__MODULE__{sidebar: sidebar, relays: Relay.new(guild_id, relay_opts)}
  end

  # The same sidebar as GuildKitToolkit's (it only reads the :sidebar field).
  @impl true
  defdelegate move(toolkit, user_id, from, to), to: GuildKitToolkit

  @impl true
  def publish(toolkit, seq, event, ops) do
    relays = toolkit.relays
    relays = if ops == [], do: relays, else: relays |> Relay.dispatch_ops(ops) |> elem(1)

    relays =
      case event do
        {:roles, user_id, roles} -> relays |> Relay.update_member(user_id, roles) |> elem(1)
        _ -> relays
      end

    {to, mentions} =
      case event do
        {:message, _author, channel_id, mentions} -> {{:channel, channel_id}, mentions}
        _ -> {:all, []}
      end

    stamped = {:stamp, seq, :os.perf_counter(:nanosecond), event}
    {_relay_seq, relays} = Relay.dispatch(relays, stamped, to: to, mentions: mentions)
    %{toolkit | relays: relays}
  end

  @impl true
  def connect(toolkit, session, user_id, member, window) do
    roles = if member, do: member.roles, else: []
    watch = if window, do: [window], else: []

    toolkit =
      if window == nil or MapSet.member?(toolkit.watched, window) do
        toolkit
      else
        _rows = MemberList.watch(toolkit.sidebar, window)
        %{toolkit | watched: MapSet.put(toolkit.watched, window)}
      end

    rows = fn {first, last} -> MemberList.rows(toolkit.sidebar, first, last) end
    opts = [active: window != nil, watch: watch, rows: rows]
    {:ok, relays} = Relay.connect(toolkit.relays, session, user_id, roles, opts)
    # The rows reach the session through its relay, before any op of its window.
    {[], %{toolkit | relays: relays}}
  end

  @impl true
  def handle_info(message, toolkit) do
    with {:ok, relays} <- Relay.handle_info(message, toolkit.relays) do
      {:ok, %{toolkit | relays: relays}}
    end
  end

  @impl true
  def rows(toolkit, first, last), do: MemberList.rows(toolkit.sidebar, first, last)

  @impl true
  defdelegate memory(guild, opts), to: GuildKitToolkit
end

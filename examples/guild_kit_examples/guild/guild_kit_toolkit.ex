defmodule GuildKit.Examples.Guild.GuildKitToolkit do
  @moduledoc """
  The GuildKit guild's sidebar, sessions and delivery (see
  `GuildKit.Examples.Guild.Toolkit`):

    * the sidebar is one `GuildKit.MemberList`: a move is one call that returns the
      ops for every watched window, and a session's window is watched there, so the
      list reports its changes;
    * events and ops reach the sessions through `GuildKit.Fanout.send/2`: one message
      per node, and the guild is not held while they are delivered;
    * the state is measured inside the guild by `GuildKit.MemoryEstimator.process/2`.
  """
  @behaviour GuildKit.Examples.Guild.Toolkit

  alias GuildKit.{Fanout, MemberList, MemoryEstimator}
  alias GuildKit.Examples.Guild.Sessions

  @enforce_keys [:guild_id, :sidebar]
  defstruct [:guild_id, :sidebar, sessions: Sessions.new()]

  @impl true
  def new(guild_id, groups, members, _opts) do
    sidebar = MemberList.new(groups: groups)
    # Nothing is watched yet, so the puts return no ops.
    Enum.each(members, fn {id, {group, name}} -> MemberList.put(sidebar, id, group, name) end)
    %__MODULE__{guild_id: guild_id, sidebar: sidebar}
  end

  # The list is a handle to native memory: it changes in place.
  @impl true
  def move(toolkit, user_id, _from, nil),
    do: {MemberList.remove(toolkit.sidebar, user_id), toolkit}

  def move(toolkit, user_id, _from, {group, name}),
    do: {MemberList.put(toolkit.sidebar, user_id, group, name), toolkit}

  @impl true
  def publish(toolkit, seq, event, ops) do
    sent_at = :os.perf_counter(:nanosecond)

    for {window, window_ops} <- ops do
      message = {:member_list_ops, toolkit.guild_id, seq, window, window_ops}
      Fanout.send(Sessions.watching(toolkit.sessions, window), message)
    end

    message = {:guild_event, toolkit.guild_id, seq, sent_at, event}
    {active, sessions} = Sessions.active(toolkit.sessions)
    Fanout.send(active, message)

    %{toolkit | sessions: sessions}
  end

  @impl true
  def connect(toolkit, session, _user_id, _member, window) do
    rows = if window, do: MemberList.watch(toolkit.sidebar, window), else: []
    {rows, %{toolkit | sessions: Sessions.connect(toolkit.sessions, session, window)}}
  end

  @impl true
  def handle_info(message, toolkit) do
    case Sessions.handle_info(message, toolkit.sessions) do
      {:down, window, sessions} ->
        if window, do: MemberList.unwatch(toolkit.sidebar, window)
        {:ok, %{toolkit | sessions: sessions}}

      :ignore ->
        :ignore
    end
  end

  @impl true
  def rows(toolkit, first, last), do: MemberList.rows(toolkit.sidebar, first, last)

  # Measured in place, without copying the state out. The first entry of the breakdown
  # is the whole state.
  @impl true
  def memory(guild, opts) do
    with {:ok, [{[], total} | _]} <- MemoryEstimator.process(guild, Keyword.put(opts, :depth, 0)) do
      {:ok, total.bytes}
    end
  end
end

defmodule GuildKit.Examples.Guild.Toolkit do
  @moduledoc """
  What a `GuildKit.Examples.Guild` delegates: its member sidebar, its connected
  sessions and the delivery of its events.

  The guild keeps the members and turns each change into an event and a move of one
  member in the sidebar; a toolkit holds everything else in one state of its own, kept
  in the guild's state. Three implement it:

    * `GuildKit.Examples.Guild.RelayToolkit` - `GuildKit.MemberList`, `GuildKit.Relay`
      (relays on each node hold the sessions; passive sessions, channel permissions,
      mentions) and `GuildKit.MemoryEstimator`;
    * `GuildKit.Examples.Guild.GuildKitToolkit` - `GuildKit.MemberList`,
      `GuildKit.Fanout` from the guild to every active session, and
      `GuildKit.MemoryEstimator`;
    * `GuildKit.Examples.Guild.OtpToolkit` - the same guild on plain OTP, for the
      demo's comparison.

  Another way to reach the sessions is one more module implementing these callbacks:
  it receives every session's connection, every process message the guild does not
  handle itself, and every event with the sidebar's ops.
  """

  alias GuildKit.Examples.Guild
  alias GuildKit.MemberList

  @typedoc "The toolkit's own state, kept in the guild's."
  @type state :: term()

  @typedoc "A sidebar group: a hoisted role, `:online` or `:offline`."
  @type group :: term()

  @typedoc "Where a member sits in the sidebar: its group and its sort key; `nil` when absent."
  @type placement :: {group(), String.t()} | nil

  @typedoc "A window of the sidebar's rows, first and last index inclusive."
  @type window :: MemberList.range()

  @doc """
  A toolkit state for the guild `guild_id`, with the sidebar `groups` in display order
  and the initial members at their places. `opts` are the guild's `:permissions` and
  `:relay` options; a toolkit takes what it uses.
  """
  @callback new(
              guild_id :: term(),
              groups :: [group()],
              [{Guild.user_id(), placement()}],
              opts :: keyword()
            ) :: state()

  @doc """
  Moves a member from one place to another (`nil` for a member that joins or leaves)
  and returns what the sessions watching a changed window must be told, per window.
  Called only when the place changes.
  """
  @callback move(state(), Guild.user_id(), from :: placement(), to :: placement()) ::
              {[{window(), [term()]}], state()}

  @doc """
  Tells the sessions about event `seq`: the ops `move/4` returned, to the sessions
  watching each window, then the event, to every active session.
  """
  @callback publish(state(), seq :: pos_integer(), Guild.event(), ops :: [{window(), [term()]}]) ::
              state()

  @doc """
  Connects a session of `user_id` (`member` is the guild's record of the user, `nil`
  when the user is not a member): active, with the rows of `window` returned, or
  passive when `window` is `nil` (and `[]` returned).
  """
  @callback connect(
              state(),
              session :: pid(),
              Guild.user_id(),
              member :: Guild.member() | nil,
              window() | nil
            ) :: {[MemberList.row()], state()}

  @doc """
  A process message the guild received (a session's `:DOWN`, say): `{:ok, state}` when
  it belongs to the toolkit, `:ignore` otherwise.
  """
  @callback handle_info(message :: term(), state()) :: {:ok, state()} | :ignore

  @doc "The sidebar's rows `first..last`."
  @callback rows(state(), first :: non_neg_integer(), last :: non_neg_integer()) ::
              [MemberList.row()]

  @doc """
  The size in bytes of the running guild's state. Called from outside the guild (the
  toolkit decides how the state is reached); `opts` come from `Guild.memory/2`.
  """
  @callback memory(guild :: GenServer.server(), opts :: keyword()) ::
              {:ok, non_neg_integer()} | {:error, term()}
end

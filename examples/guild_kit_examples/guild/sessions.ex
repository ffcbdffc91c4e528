defmodule GuildKit.Examples.Guild.Sessions do
  @moduledoc """
  The sessions connected to a guild, kept in the guild's own state: each session's
  window (`nil` for a passive one) and, per window, the sessions that watch it. Used
  by the toolkits that send to sessions from the guild process.

  Sessions are monitored on `connect/3`; `handle_info/2` forgets the ones that exit.
  The list of active sessions is built on the first `active/1` after a connect or an
  exit and kept until the next one, so events in between do not rebuild it.
  """

  alias GuildKit.Examples.Guild.Toolkit

  defstruct windows: %{}, watchers: %{}, active: nil

  @typedoc "The connected sessions."
  @opaque t :: %__MODULE__{
            windows: %{pid() => Toolkit.window() | nil},
            watchers: %{Toolkit.window() => [pid()]},
            active: [pid()] | nil
          }

  @doc "No sessions."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Connects and monitors `session`, watching `window` (`nil`: passive)."
  @spec connect(t(), pid(), Toolkit.window() | nil) :: t()
  def connect(%__MODULE__{} = sessions, session, window) do
    _ = Process.monitor(session)
    windows = Map.put(sessions.windows, session, window)

    watchers =
      if window,
        do: Map.update(sessions.watchers, window, [session], &[session | &1]),
        else: sessions.watchers

    %__MODULE__{windows: windows, watchers: watchers, active: nil}
  end

  @doc """
  For the `:DOWN` of a connected session, `{:down, window, sessions}` with the session
  forgotten (`window` is what it watched, `nil` for a passive one); `:ignore` for any
  other message.
  """
  @spec handle_info(term(), t()) :: {:down, Toolkit.window() | nil, t()} | :ignore
  def handle_info({:DOWN, _ref, :process, session, _reason}, %__MODULE__{} = sessions)
      when is_map_key(sessions.windows, session) do
    {window, windows} = Map.pop!(sessions.windows, session)

    {:down, window,
     %__MODULE__{
       windows: windows,
       watchers: unwatch(sessions.watchers, session, window),
       active: nil
     }}
  end

  def handle_info(_message, %__MODULE__{}), do: :ignore

  defp unwatch(watchers, _session, nil), do: watchers

  defp unwatch(watchers, session, window) do
    case List.delete(Map.fetch!(watchers, window), session) do
      [] -> Map.delete(watchers, window)
      rest -> Map.put(watchers, window, rest)
    end
  end

  @doc "The sessions watching `window`."
  @spec watching(t(), Toolkit.window()) :: [pid()]
  def watching(%__MODULE__{watchers: watchers}, window), do: Map.get(watchers, window, [])

  @doc """
  Every active session, and the sessions with that list kept: O(1) when nothing
  connected or exited since the last call, O(active sessions) otherwise.
  """
  @spec active(t()) :: {[pid()], t()}
  def active(%__MODULE__{active: nil, watchers: watchers} = sessions) do
    active = watchers |> Map.values() |> List.flatten()
    {active, %__MODULE__{sessions | active: active}}
  end

  def active(%__MODULE__{active: active} = sessions), do: {active, sessions}

  @doc "The windows that at least one session watches."
  @spec windows(t()) :: [Toolkit.window()]
  def windows(%__MODULE__{watchers: watchers}), do: Map.keys(watchers)
end

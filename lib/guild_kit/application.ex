defmodule GuildKit.Application do
  # Starts the processes of the components that need any. Each component brings one
  # supervisor of its own, listed in `components/0`; a crash inside one component is
  # handled by that component's supervisor and never restarts another component.
  @moduledoc false

  use Application

  @impl Application
  def start(_type, _args) do
    Supervisor.start_link(components(), strategy: :one_for_one, name: GuildKit.Supervisor)
  end

  # One child spec per component. Components read their configuration when their
  # supervisor starts, never at compile time.
  defp components do
    [GuildKit.Fanout.Supervisor]
  end
end

defmodule GuildKit.Application do
  # Starts the processes of the components that need any. Each component brings one
  # supervisor of its own, listed in `components/0`; a crash inside one component is
  # handled by that component's supervisor and never restarts another component.
  @moduledoc false

  use Application

  @impl Application
  def start(_type, _args) do
    children = components()

    # The restart intensity of every fan-out supervisor: a burst of crashes of a
    # component's own supervisor does not take the application down.
    Supervisor.start_link(
      children,
      [strategy: :one_for_one, name: GuildKit.Supervisor] ++
        GuildKit.Fanout.Runtime.intensity(length(children))
    )
  end

  # One child spec per component. Components read their configuration when the
  # application starts, never at compile time.
  defp components do
    fanout() ++ relay_supervisor()
  end

  # The application's GuildKit.Fanout instance, configured by
  # `config :guild_kit, GuildKit.Fanout, ...`, unless `config :guild_kit,
  # start_fanout: false` leaves fan-out to the user's own supervision tree.
  defp fanout do
    if Application.get_env(:guild_kit, :start_fanout, true) do
      env = Application.get_env(:guild_kit, GuildKit.Fanout, [])
      context = "bad config :guild_kit, GuildKit.Fanout: "

      if is_list(env) and Keyword.has_key?(env, :name) do
        raise ArgumentError,
              context <> "the application's instance is always named GuildKit.Fanout"
      end

      [GuildKit.Fanout.child_spec(GuildKit.Fanout.Runtime.options!(env, context))]
    else
      []
    end
  end

  # The node's default relay supervisor, `GuildKit.Relay.Supervisor`, where guilds start
  # their relays on this node, unless `config :guild_kit, start_relay_supervisor: false`
  # leaves that to the user's own tree (`{GuildKit.Relay, name: ...}`). After fan-out,
  # so that relays stop before the fan-out they receive through.
  defp relay_supervisor do
    if Application.get_env(:guild_kit, :start_relay_supervisor, true) do
      [GuildKit.Relay.child_spec([])]
    else
      []
    end
  end
end

defmodule GuildKit.Relay.PassiveTest do
  # What a passive session's passive updates list: channels with events since its last
  # update on its relay, and never an event from before it became passive there.
  use ExUnit.Case, async: false

  alias GuildKit.{Permissions, Relay}
  alias GuildKit.Test.{Receivers, RelayGuild}

  @guild :passive_guild

  defp dispatch(guild, event),
    do: RelayGuild.run(guild, &Relay.dispatch(&1, event, to: {:channel, :general}))

  test "a session made passive is not told again of events it got while active" do
    perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:general, [])
    {:ok, guild} = RelayGuild.start(@guild, permissions: perms, passive_interval: 200)
    {group, [session]} = Receivers.start(1)

    # Connected, sent an event and made passive before any passive tick of the relay
    # (every 200 / 16 ms) can mark event 1 as told to the session's slice.
    :ok =
      RelayGuild.run(guild, fn relays ->
        {:ok, relays} = Relay.connect(relays, session, :ann, [], active: true)
        {1, relays} = Relay.dispatch(relays, :while_active, to: {:channel, :general})
        {:ok, relays} = Relay.set_active(relays, session, false)
        {:ok, relays}
      end)

    # Two passive intervals: event 1 is not news to the session, which had it.
    Process.sleep(400)
    2 = dispatch(guild, :while_passive)

    assert [
             {^session,
              [
                {:guild_event, @guild, 1, :while_active},
                {:passive_update, @guild, 2, %{general: 2}}
              ]}
           ] = Receivers.await(group, 2)

    GenServer.stop(guild)
    Receivers.stop(group)
  end
end

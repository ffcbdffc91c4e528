defmodule GuildKit.Relay.ConfigTest do
  # The two ways to run relay supervisors: the application's on every node, and one in
  # the user's own tree. Not async: it restarts the application.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias GuildKit.Relay

  setup do
    saved = Application.get_env(:guild_kit, :start_relay_supervisor)

    on_exit(fn ->
      if saved == nil,
        do: Application.delete_env(:guild_kit, :start_relay_supervisor),
        else: Application.put_env(:guild_kit, :start_relay_supervisor, saved)

      _ = Application.stop(:guild_kit)
      {:ok, _} = Application.ensure_all_started(:guild_kit)
    end)
  end

  test "the application runs GuildKit.Relay.Supervisor, and relays start under it" do
    assert is_pid(Process.whereis(GuildKit.Relay.Supervisor))
    {:ok, relays} = Relay.connect(Relay.new(:configured), self(), :ann, [])
    [relay] = Relay.stats(relays).relays

    assert [{:undefined, ^relay, :worker, [GuildKit.Relay.Server]}] =
             DynamicSupervisor.which_children(GuildKit.Relay.Supervisor)
  end

  test "start_relay_supervisor: false leaves it to the user's tree" do
    Application.put_env(:guild_kit, :start_relay_supervisor, false)
    :ok = Application.stop(:guild_kit)
    {:ok, _} = Application.ensure_all_started(:guild_kit)
    assert Process.whereis(GuildKit.Relay.Supervisor) == nil

    error = assert_raise ArgumentError, fn -> Relay.connect(Relay.new(:g), self(), :ann, []) end

    assert error.message =~ "GuildKit.Relay.Supervisor is not running on this node"

    {:ok, tree} =
      Supervisor.start_link([{Relay, name: ConfigTest.Relays}], strategy: :one_for_one)

    relays = Relay.new(:mine, supervisor: ConfigTest.Relays)
    {:ok, relays} = Relay.connect(relays, self(), :ann, [], active: true)
    {1, _} = Relay.dispatch(relays, :hello)
    assert_receive {:guild_event, :mine, 1, :hello}
    [relay] = Relay.stats(relays).relays
    assert [{_, ^relay, :worker, _}] = DynamicSupervisor.which_children(ConfigTest.Relays)
    Supervisor.stop(tree)
  end
end

defmodule GuildKit.Relay.BadInputTest do
  # Bad input to every public function: a clear ArgumentError, and the handle exactly
  # as it was (nothing sent to any relay: the sessions get nothing either).
  use ExUnit.Case, async: true

  alias GuildKit.{Permissions, Relay}

  setup do
    perms = Permissions.new(everyone: 0x400) |> Permissions.put_channel(:general, [])
    relays = Relay.new(:bad_guild, permissions: perms, max_sessions: 2)
    session = spawn(fn -> receive do: (:stop -> :ok) end)
    {:ok, relays} = Relay.connect(relays, session, :ann, [:a], active: true, watch: [{0, 9}])
    {_seq, relays} = Relay.dispatch(relays, :flush_first)
    on_exit(fn -> send(session, :stop) end)
    %{relays: relays, session: session}
  end

  defp refuses(relays, message, fun) do
    error = assert_raise ArgumentError, fn -> fun.(relays) end
    assert error.message =~ message
  end

  test "new/2", _ do
    for {opts, message} <- [
          {[max_sessions: 0], "expected :max_sessions to be an integer in 1..65536, got: 0"},
          {[max_sessions: 70_000], ":max_sessions"},
          {[max_sessions: :many], ":max_sessions"},
          {[passive_interval: 0], "expected :passive_interval to be a positive integer"},
          {[passive_interval: 1.5], ":passive_interval"},
          {[permissions: %{}], "expected a GuildKit.Permissions, got: %{}"},
          {[permissions: nil], "expected a GuildKit.Permissions, got: nil"},
          {[supervisor: "sup"], "expected :supervisor to be an atom"},
          {[fanout: nil], "expected :fanout to be an atom"},
          {[colour: :red], "unknown keys [:colour]"},
          {:not_a_list, "expected options to be a keyword list"},
          {[:max_sessions], "expected options to be a keyword list"}
        ] do
      error = assert_raise ArgumentError, fn -> Relay.new(:g, opts) end
      assert error.message =~ message
    end
  end

  test "connect/5", %{relays: relays, session: session} do
    other = spawn(fn -> :ok end)
    refuses(relays, "expected a session pid, got: :ann", &Relay.connect(&1, :ann, :ann, []))
    refuses(relays, "already connected", &Relay.connect(&1, session, :ann, []))
    refuses(relays, "expected a member id made of", &Relay.connect(&1, other, self(), []))

    refuses(
      relays,
      "expected a member id made of",
      &Relay.connect(&1, other, {:m, make_ref()}, [])
    )

    refuses(relays, "expected role ids to be a list", &Relay.connect(&1, other, :bob, :mods))
    refuses(relays, "expected role ids to be a list", &Relay.connect(&1, other, :bob, [:a | :b]))
    refuses(relays, "expected role ids made of", &Relay.connect(&1, other, :bob, [self()]))

    refuses(
      relays,
      "expected :active to be a boolean",
      &Relay.connect(&1, other, :b, [], active: 1)
    )

    refuses(
      relays,
      "expected a window {first, last}",
      &Relay.connect(&1, other, :b, [], watch: [{9, 0}])
    )

    refuses(relays, "expected a window", &Relay.connect(&1, other, :b, [], watch: [{0, 2 ** 64}]))

    refuses(
      relays,
      "expected :watch to be a list",
      &Relay.connect(&1, other, :b, [], watch: {0, 9})
    )

    refuses(
      relays,
      "expected :rows to be a function",
      &Relay.connect(&1, other, :b, [], rows: :rows)
    )

    refuses(relays, "unknown keys [:window]", &Relay.connect(&1, other, :b, [], window: {0, 9}))

    refuses(
      relays,
      "expected options to be a keyword list",
      &Relay.connect(&1, other, :b, [], :x)
    )

    refuses(relays, "expected :rows to return a list", fn relays ->
      Relay.connect(relays, other, :b, [], watch: [{0, 9}], rows: fn _ -> :none end)
    end)

    refuses(%{}, "expected a GuildKit.Relay handle, got: %{}", &Relay.connect(&1, other, :b, []))
  end

  test "disconnect/2", %{relays: relays} do
    refuses(relays, "expected a session pid, got: nil", &Relay.disconnect(&1, nil))
    refuses(:relays, "expected a GuildKit.Relay handle", &Relay.disconnect(&1, self()))
  end

  test "set_active/4", %{relays: relays, session: session} do
    refuses(relays, "expected a session pid", &Relay.set_active(&1, "pid", true))
    refuses(relays, "expected active? to be a boolean", &Relay.set_active(&1, session, :yes))
    refuses(relays, "expected a window", &Relay.set_active(&1, session, true, watch: [:top]))

    refuses(
      relays,
      ":rows needs :watch",
      fn r -> Relay.set_active(r, session, true, rows: fn _ -> [] end) end
    )

    refuses(relays, "unknown keys [:active]", &Relay.set_active(&1, session, true, active: true))
    refuses(nil, "expected a GuildKit.Relay handle", &Relay.set_active(&1, session, true))
  end

  test "update_member/3", %{relays: relays} do
    refuses(relays, "expected a member id made of", &Relay.update_member(&1, self(), []))
    refuses(relays, "expected role ids to be a list", &Relay.update_member(&1, :ann, nil))
    refuses(relays, "expected role ids made of", &Relay.update_member(&1, :ann, [fn -> :ok end]))
    refuses([], "expected a GuildKit.Relay handle", &Relay.update_member(&1, :ann, []))
  end

  test "put_permissions/2", %{relays: relays} do
    refuses(
      relays,
      "expected a GuildKit.Permissions, got: [everyone: 0]",
      &Relay.put_permissions(&1, everyone: 0)
    )

    refuses(:x, "expected a GuildKit.Relay handle", &Relay.put_permissions(&1, Permissions.new()))
  end

  test "dispatch/3", %{relays: relays} do
    refuses(relays, "unknown channel :nope", &Relay.dispatch(&1, :e, to: {:channel, :nope}))

    refuses(
      relays,
      "unknown channel :nope",
      &Relay.dispatch(&1, :e, to: {:channel, :nope, 0x800})
    )

    refuses(relays, "expected :to to be :all", &Relay.dispatch(&1, :e, to: :everyone))

    refuses(
      relays,
      "expected :to to be :all",
      &Relay.dispatch(&1, :e, to: {:channel, :general, -1})
    )

    refuses(relays, "expected :mentions to be a list", &Relay.dispatch(&1, :e, mentions: :ann))
    refuses(relays, "unknown keys [:channel]", &Relay.dispatch(&1, :e, channel: :general))
    refuses(relays, "expected options to be a keyword list", &Relay.dispatch(&1, :e, :all))
    refuses(1, "expected a GuildKit.Relay handle", &Relay.dispatch(&1, :e, []))
  end

  test "dispatch/3 knows a channel by its exact id, as Permissions does", _ do
    negative_zero = GuildKit.Test.TermGenerator.negative_zero()
    channels = [2, :two, "two", 0.0, {:c, 0.0}, [2]]
    perms = Enum.reduce(channels, Permissions.new(), &Permissions.put_channel(&2, &1, []))
    relays = Relay.new(:exact_ids, permissions: perms)

    for channel <- channels do
      assert Permissions.has_channel?(perms, channel)
      assert {1, _relays} = Relay.dispatch(relays, :e, to: {:channel, channel})
    end

    # Equal in a map key or by ==, but other ids.
    for other <- [2.0, :"2", "Two", negative_zero, {:c, negative_zero}, [2.0]] do
      refute Permissions.has_channel?(perms, other)
      refuses(relays, "unknown channel", &Relay.dispatch(&1, :e, to: {:channel, other}))
    end
  end

  test "dispatch_ops/2", %{relays: relays} do
    refuses(relays, "expected changes to be a list", &Relay.dispatch_ops(&1, %{}))

    refuses(
      relays,
      "expected changes to be a list of {window, ops}",
      &Relay.dispatch_ops(&1, [{{0, 9}, :ops}])
    )

    refuses(relays, "expected a window", &Relay.dispatch_ops(&1, [{{5, 1}, []}]))

    refuses(
      relays,
      "expected changes to be a list of {window, ops}",
      &Relay.dispatch_ops(&1, [:ops])
    )

    refuses(:x, "expected a GuildKit.Relay handle", &Relay.dispatch_ops(&1, []))
  end

  test "handle_info/2, stats/1, child_spec/1, start_link/1" do
    refuses(:x, "expected a GuildKit.Relay handle", &Relay.handle_info(:msg, &1))
    refuses(:x, "expected a GuildKit.Relay handle", &Relay.stats/1)
    refuses([name: 1], "expected :name to be an atom", &Relay.child_spec/1)
    refuses([nmae: X], "unknown keys [:nmae]", &Relay.child_spec/1)
    refuses(:name, "expected options to be a keyword list", &Relay.start_link/1)
  end

  test "the handle and the sessions are as they were", %{relays: relays, session: session} do
    before = Relay.stats(relays)

    for bad <- [
          &Relay.connect(&1, session, :ann, []),
          &Relay.dispatch(&1, :e, to: {:channel, :nope}),
          &Relay.dispatch_ops(&1, [{{5, 1}, []}]),
          &Relay.update_member(&1, :ann, [self()]),
          &Relay.set_active(&1, session, :maybe)
        ] do
      assert_raise ArgumentError, fn -> bad.(relays) end
    end

    # The same handle still works, and its seq did not move.
    assert Relay.stats(relays) == before
    {seq, _} = Relay.dispatch(relays, :after)
    assert seq == before.seq + 1
    assert_receive_nothing_but_flushes()
  end

  # The only messages here are the handle's own (flushes, relay announcements, a relay's
  # report of its deliveries).
  defp assert_receive_nothing_but_flushes do
    receive do
      {GuildKit.Relay, _tag, _kind} -> assert_receive_nothing_but_flushes()
      {GuildKit.Relay, _tag, :up, _pid, _version, _start} -> assert_receive_nothing_but_flushes()
      {GuildKit.Relay, _tag, :report, _pid, _done, _sent} -> assert_receive_nothing_but_flushes()
      other -> flunk("unexpected #{inspect(other)}")
    after
      50 -> :ok
    end
  end
end

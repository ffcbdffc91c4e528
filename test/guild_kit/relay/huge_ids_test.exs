defmodule GuildKit.Relay.HugeIdsTest do
  # Ids that the relays' audiences cannot store (over 16 MiB encoded) are refused in the
  # guild, at once, and reach no relay. They used to be checked by walking them in
  # Elixir (a non-yielding `Tuple.to_list/1` of a 16M-element tuple held the guild's
  # scheduler for over a second), and one over the size limit crashed the relay that
  # got it.
  use ExUnit.Case, async: false

  alias GuildKit.{Permissions, Relay}
  alias GuildKit.Test.LongSchedule

  @moduletag :slow

  test "connect/5 and update_member/3 with a huge id raise in the guild; the relay lives on" do
    calls = [
      {"expected a member id", &Relay.connect(&1, spawn(fn -> :ok end), &2, [])},
      {"expected role ids", &Relay.connect(&1, spawn(fn -> :ok end), :bob, [&2])},
      {"expected a member id", &Relay.update_member(&1, &2, [])},
      {"expected role ids", &Relay.update_member(&1, :ann, [:a, &2])}
    ]

    for {expected, call} <- calls do
      # The measured process is the guild (relays belong to the process that makes
      # them) and the session of member :ann.
      setup = fn ->
        relays = Relay.new(:huge_ids, permissions: Permissions.new(everyone: 0x400))
        {:ok, relays} = Relay.connect(relays, self(), :ann, [:a], active: true)
        {relays, Tuple.duplicate(0, 16_777_215)}
      end

      {message, delivered} =
        LongSchedule.assert_no_long_schedule(setup, fn {relays, huge} ->
          message =
            try do
              call.(relays, huge)
              :no_error
            rescue
              error in ArgumentError -> Exception.message(error)
            end

          {seq, _relays} = Relay.dispatch(relays, :after)

          receive do
            {:guild_event, :huge_ids, ^seq, :after} -> {message, :delivered}
          after
            5_000 -> {message, :lost}
          end
        end)

      assert message =~ expected
      assert message =~ "16777215 elements"
      assert byte_size(message) < 2_000
      assert delivered == :delivered
    end
  end
end

defmodule GuildKit.Fanout.MessageKindsTest do
  # Messages of every kind and size reach every receiver equal to what was sent, in
  # every mode: small ones copied on normal schedulers, big ones and those whose size a
  # NIF cannot read on dirty ones. Not async: its copies weigh tens of MB, which would
  # disturb the tests that watch the VM's memory.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Test.Receivers

  @modes [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]]

  test "messages of every size and kind arrive equal to the original, in every mode" do
    fun = fn x -> x + 1 end

    messages = [
      # Terms whose size a NIF cannot read, copied on a dirty scheduler.
      {:fun, fun},
      {:bignum, 2 ** 300},
      {:bits, <<1::3>>},
      # A big term (past the normal-scheduler copy budget) and a big refc binary.
      {:big, Enum.to_list(1..100_000)},
      {:binary, :binary.copy("z", 1_000_000)},
      # Small ones around it.
      {:small, %{a: [1, 2.5, "three"], b: {self(), make_ref()}}}
    ]

    {group, pids} = Receivers.start(5)
    opts = @modes

    for message <- messages, mode <- opts, do: :ok = Fanout.send(pids, message, mode)

    expected = for message <- messages, _ <- opts, do: message

    for {_pid, received} <- Receivers.await(group, length(expected) * 5) do
      assert received == expected
    end

    Receivers.stop(group)
  end
end

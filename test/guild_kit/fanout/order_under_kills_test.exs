defmodule GuildKit.Fanout.OrderUnderKillsTest do
  # Per-receiver order is a promise even while fan-out processes die: a dead
  # partitioner's workers must never deliver after its successor did. Killed senders
  # and partitioners may lose what they held (documented), nothing else.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.{FanoutFaults, Receivers, TermGenerator}

  @moduletag :slow
  @moduletag timeout: 300_000

  @modes [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]]

  test "one caller's sequence stays in order while partitioners and senders are killed" do
    TermGenerator.seed!("order-under-kills", 90_301)
    name = __MODULE__.Fanout
    start_supervised!({Fanout, name: name, partitioners: 2, senders: 2, workers: 4})
    runtime = Runtime.fetch!(name)

    # 60,000 receiver entries: 20 pids, each listed 3,000 times, so each message keeps
    # every worker busy long enough for kills to land in the middle of batches.
    {group, pids} = Receivers.start(20)
    receivers = pids |> List.duplicate(3_000) |> List.flatten() |> Enum.shuffle()

    # Kills the caller's partitioner (two times in three) or a sender.
    partitioner = elem(runtime.partitioners, :erlang.phash2(self(), 2))
    names = [partitioner, partitioner | Tuple.to_list(runtime.senders)]
    killer = FanoutFaults.start_killer(fn -> Process.whereis(Enum.random(names)) end)

    for seq <- 1..120 do
      :ok = Fanout.send(receivers, {:seq, seq}, [name: name] ++ Enum.random(@modes))
      Process.sleep(3)
    end

    # Partitioners and senders died many times while the sequence was sent.
    assert FanoutFaults.stop_killer(killer) >= 10

    # Once the kills stop and every killed process is back, nothing more is lost:
    # each receiver gets exactly 3,000 of each.
    total = Receivers.settle(group, 300)
    FanoutFaults.await_running(name)

    for seq <- 121..130,
        do: :ok = Fanout.send(receivers, {:seq, seq}, [name: name] ++ Enum.random(@modes))

    group
    |> Receivers.await(total + 10 * 60_000)
    |> FanoutFaults.assert_ordered(3_000, 121..130)

    Receivers.stop(group)
  end
end

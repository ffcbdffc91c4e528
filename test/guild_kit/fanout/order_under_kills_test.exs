defmodule GuildKit.Fanout.OrderUnderKillsTest do
  # Per-receiver order is a promise even while fan-out processes die: a dead
  # partitioner's workers must never deliver after its successor did. Killed senders
  # and partitioners may lose what they held (documented), nothing else.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Fanout.Runtime
  alias GuildKit.Test.Receivers

  @moduletag :slow
  @moduletag timeout: 300_000

  @modes [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]]

  test "one caller's sequence stays in order while partitioners and senders are killed" do
    seed = 90_301
    IO.puts("order-under-kills seed: #{seed}")
    :rand.seed(:exsss, {seed, seed, seed})
    name = __MODULE__.Fanout
    start_supervised!({Fanout, name: name, partitioners: 2, senders: 2, workers: 4})
    runtime = Runtime.fetch!(name)

    # 60,000 receiver entries: 20 pids, each listed 3,000 times, so each message keeps
    # every worker busy long enough for kills to land in the middle of batches.
    {group, pids} = Receivers.start(20)
    receivers = pids |> List.duplicate(3_000) |> List.flatten() |> Enum.shuffle()

    parent = self()
    killer = spawn_link(fn -> kill_loop(runtime, parent, 0) end)

    for seq <- 1..120 do
      :ok = Fanout.send(receivers, {:seq, seq}, [name: name] ++ Enum.random(@modes))
      Process.sleep(3)
    end

    send(killer, :stop)
    assert_receive {:kills, kills}, 5_000
    # Partitioners and senders died many times while the sequence was sent.
    assert kills >= 10

    # Once the kills stop, nothing more is lost.
    for seq <- 121..130,
        do: :ok = Fanout.send(receivers, {:seq, seq}, [name: name] ++ Enum.random(@modes))

    results = Receivers.await_quiet(group, 10 * 60_000, 300)

    for {_pid, messages} <- results do
      seqs = for {:seq, seq} <- messages, do: seq
      assert length(seqs) == length(messages)
      # Never an older message after a newer one.
      assert seqs == Enum.sort(seqs)
      counts = Enum.frequencies(seqs)
      # Each message at most once per listing; all of the last ten, every time.
      assert Enum.all?(counts, fn {_seq, count} -> count <= 3_000 end)
      assert Enum.all?(121..130, &(counts[&1] == 3_000))
    end

    Receivers.stop(group)
  end

  # Every 10-30 ms kills the caller's partitioner (two times in three) or a sender.
  defp kill_loop(runtime, parent, kills) do
    receive do
      :stop -> send(parent, {:kills, kills})
    after
      Enum.random(10..30) ->
        partitioner = elem(runtime.partitioners, :erlang.phash2(parent, 2))
        names = [partitioner, partitioner | Tuple.to_list(runtime.senders)]

        case Process.whereis(Enum.random(names)) do
          nil ->
            kill_loop(runtime, parent, kills)

          pid ->
            Process.exit(pid, :kill)
            kill_loop(runtime, parent, kills + 1)
        end
    end
  end
end

defmodule GuildKit.Fanout.SchedulerTest do
  # No NIF call of a fan-out holds a normal scheduler for a millisecond, at 100k pids.
  # The measuring follows FACTS.md through GuildKit.Test.LongSchedule; a control call
  # that is known not to yield shows that the monitor catches one.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  # The fan-out slices take about 0.1 ms each and yield every ~0.4 ms, so 1 ms
  # catches a single call that walked a 100k list on a normal scheduler (~1 ms).
  @threshold [threshold_ms: 1, min_heap_words: 4_000_000]

  setup_all do
    # Receivers that drop what they get, so that a send to them stays cheap.
    pids = for _ <- 1..100_000, do: spawn(&drop_all/0)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)
    %{pids: pids}
  end

  test "the control: a non-yielding BIF of several ms is reported" do
    {_, reports} =
      LongSchedule.measure(
        fn -> Enum.to_list(1..3_000_000) end,
        &:erts_debug.flat_size/1,
        @threshold
      )

    assert reports != []
  end

  test "a default-mode send to 100k pids: the caller's split, in slices", %{pids: pids} do
    {:ok, reports} = LongSchedule.measure(fn -> pids end, &Fanout.send(&1, :event), @threshold)
    assert reports == []
  end

  test "splitting 100k pids in a sender or partitioner (dirty scheduler)", %{pids: pids} do
    {_, reports} =
      LongSchedule.measure(fn -> pids end, &(Fanout.split(&1, 4) |> tuple_size()), @threshold)

    assert reports == []
  end

  test "checking 100k pids (offload mode's per-receiver work)", %{pids: pids} do
    {:ok, reports} = LongSchedule.measure(fn -> pids end, &check(&1, 0), @threshold)
    assert reports == []
  end

  # The same bounded loop GuildKit.Fanout runs for offload: true.
  defp check(receivers, position) do
    case GuildKit.Native.fanout_check(receivers, position) do
      {:guild_kit_more, rest, position} -> check(rest, position)
      result -> result
    end
  end

  defp drop_all do
    receive do
      _ -> drop_all()
    end
  end
end

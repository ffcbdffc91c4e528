defmodule GuildKit.Fanout.SchedulerTest do
  # No NIF call of a fan-out holds a normal scheduler for long. The measuring follows
  # FACTS.md through GuildKit.Test.LongSchedule, at the project's 5 ms threshold (a
  # tighter one reports the OS preempting a scheduler thread on a busy 2-core machine).
  # The lists are 1M receivers long, so a call that walked a whole list on a normal
  # scheduler (about 10 ms) would be caught; a control call that is known not to yield
  # shows that the monitor catches one.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Test.LongSchedule

  @moduletag :slow
  @moduletag timeout: 300_000
  @threshold [threshold_ms: 5, min_heap_words: 20_000_000]
  @receivers 1_000_000

  setup_all do
    # 1,000 receivers that drop what they get, each listed 1,000 times (a pid listed
    # twice gets the message twice), so that the sends stay cheap.
    pids = for _ <- 1..1_000, do: spawn(&drop_all/0)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)
    %{receivers: fn -> pids |> List.duplicate(div(@receivers, 1_000)) |> List.flatten() end}
  end

  test "the control: a non-yielding BIF of tens of ms is reported" do
    {_, reports} =
      LongSchedule.measure(
        fn -> Enum.to_list(1..10_000_000) end,
        &:erts_debug.flat_size/1,
        @threshold
      )

    assert reports != []
  end

  test "a default-mode send to 1M receivers: the caller's split, in slices", %{
    receivers: receivers
  } do
    {:ok, reports} = LongSchedule.measure(receivers, &Fanout.send(&1, :event), @threshold)
    assert reports == []
  end

  test "splitting 1M receivers in a sender or partitioner (dirty scheduler)", %{
    receivers: receivers
  } do
    {_, reports} =
      LongSchedule.measure(receivers, &(Fanout.split(&1, 4) |> tuple_size()), @threshold)

    assert reports == []
  end

  test "checking 1M receivers (offload mode's per-receiver work)", %{receivers: receivers} do
    {:ok, reports} = LongSchedule.measure(receivers, &check(&1, 0), @threshold)
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

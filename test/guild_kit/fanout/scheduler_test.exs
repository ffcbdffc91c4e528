defmodule GuildKit.Fanout.SchedulerTest do
  # No NIF call of a fan-out holds a normal scheduler for a millisecond, at 100k pids.
  #
  # Method (see FACTS.md): build the input first in a process spawned with a large
  # :min_heap_size (so no garbage collection runs during the call), throw away the
  # reports so far, then make the call and count only the reports for that process.
  # A control call that is known not to yield shows that the monitor catches one.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout

  @moduletag :slow
  @threshold_ms 1

  setup_all do
    # Receivers that drop what they get, so that a send to them stays cheap.
    pids = for _ <- 1..100_000, do: spawn(&drop_all/0)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)
    %{pids: pids}
  end

  test "the control: a non-yielding BIF of several ms is reported" do
    big = Enum.to_list(1..3_000_000)
    assert long_schedules(fn -> :erts_debug.flat_size(big) end, big) > 0
  end

  test "a default-mode send to 100k pids: the caller's split, in slices", %{pids: pids} do
    assert long_schedules(fn -> :ok = Fanout.send(pids, :event) end, pids) == 0
  end

  test "splitting 100k pids in a sender or partitioner (dirty scheduler)", %{pids: pids} do
    assert long_schedules(fn -> Fanout.split(pids, 4) end, pids) == 0
  end

  test "checking 100k pids (offload mode's per-receiver work)", %{pids: pids} do
    assert long_schedules(fn -> :ok = check(pids, 0) end, pids) == 0
  end

  defp drop_all do
    receive do
      _ -> drop_all()
    end
  end

  # The same bounded loop GuildKit.Fanout runs for offload: true.
  defp check(receivers, position) do
    case GuildKit.Native.fanout_check(receivers, position) do
      {:guild_kit_more, rest, position} -> check(rest, position)
      result -> result
    end
  end

  # Runs `fun` in a fresh process that already holds `input` and has room for its
  # result, and returns how many long_schedule reports came for that process.
  defp long_schedules(fun, input) do
    test = self()

    worker =
      :erlang.spawn_opt(
        fn ->
          _ = input
          receive(do: (:go -> :ok))
          fun.()
          send(test, :done)
          receive(do: (:stop -> :ok))
        end,
        min_heap_size: 8_000_000
      )

    Process.sleep(50)
    previous = :erlang.system_monitor(self(), [{:long_schedule, @threshold_ms}])
    flush_reports()
    send(worker, :go)
    assert_receive :done, 60_000
    Process.sleep(20)
    reset(previous)
    send(worker, :stop)
    count_reports(worker, 0)
  end

  defp reset(:undefined), do: :erlang.system_monitor(:undefined)
  defp reset({pid, options}), do: :erlang.system_monitor(pid, options)

  defp flush_reports do
    receive do
      {:monitor, _, :long_schedule, _} -> flush_reports()
    after
      0 -> :ok
    end
  end

  defp count_reports(pid, count) do
    receive do
      {:monitor, ^pid, :long_schedule, _info} -> count_reports(pid, count + 1)
      {:monitor, _other, :long_schedule, _info} -> count_reports(pid, count)
    after
      0 -> count
    end
  end
end

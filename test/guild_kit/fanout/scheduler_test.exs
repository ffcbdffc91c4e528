defmodule GuildKit.Fanout.SchedulerTest do
  # No fan-out process holds a normal scheduler for long: not the caller, and not the
  # partitioners, workers or senders that carry its message, until every receiver has
  # it. The measuring follows FACTS.md, as GuildKit.Test.LongSchedule does, at the
  # project's 5 ms threshold, watching `long_schedule` (and `long_gc`) for every
  # process of the application's instance as well as the caller, with
  # GuildKit.Test.SchedulerWatch, which keeps a report only when the process also used
  # that much CPU on a normal scheduler (so that the OS preempting a scheduler thread of
  # a loaded machine is not taken for a hold). The lists are 1M receivers long, so a
  # walk of a whole list on a normal scheduler (about 10 ms), or a copy of it between
  # fan-out processes (tens of ms), would be caught; the message is 4M elements long,
  # so a copy of it (about 40 ms) would be. Control calls that are known not to yield
  # show that both watches catch one.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Test.{FanoutFaults, LongSchedule, SchedulerWatch}

  @moduletag :slow
  @moduletag timeout: 300_000
  @threshold_ms 5
  @receivers 1_000_000

  setup_all do
    # 1,000 receivers that count what they get, each listed 1,000 times (a pid listed
    # twice gets the message twice), so that the sends stay cheap.
    counter = :counters.new(1, [:write_concurrency])
    pids = for _ <- 1..1_000, do: spawn(fn -> count_all(counter) end)
    on_exit(fn -> Enum.each(pids, &Process.exit(&1, :kill)) end)

    %{
      counter: counter,
      few: Enum.take(pids, 3),
      receivers: fn -> pids |> List.duplicate(div(@receivers, 1_000)) |> List.flatten() end
    }
  end

  test "the control: a non-yielding BIF of tens of ms is reported" do
    {_, reports} =
      LongSchedule.measure(
        fn -> Enum.to_list(1..10_000_000) end,
        &:erts_debug.flat_size/1,
        threshold_ms: @threshold_ms,
        min_heap_words: 20_000_000
      )

    assert reports != []
  end

  test "the control: the watch of fan-out processes reports a process that holds on" do
    list = Enum.to_list(1..10_000_000)
    parent = self()

    holder =
      spawn(fn ->
        receive do: (:go -> send(parent, {:size, :erts_debug.flat_size(list)}))
        # Waits rather than exits, so that it is seen being scheduled out.
        receive do: (:exit -> :ok)
      end)

    watch = SchedulerWatch.start(Fanout, [holder], @threshold_ms)
    send(holder, :go)
    assert_receive {:size, _}, 10_000
    assert [{^holder, :long_schedule, _} | _] = SchedulerWatch.stop(watch)
    send(holder, :exit)
  end

  for {mode, opts} <- [default: [], offload: [offload: true]] do
    test "a send to 1M receivers (#{mode}): the caller and every fan-out process", context do
      reports =
        measure(context, context.receivers, &Fanout.send(&1, :event, unquote(opts)), @receivers)

      assert reports == []
    end
  end

  for {mode, opts} <- [
        default: [],
        pack: [pack: :binary],
        offload: [offload: true],
        offload_pack: [offload: true, pack: :binary]
      ] do
    test "a 4M-element message (#{mode}): copied off the normal schedulers", context do
      message = fn -> {:event, Enum.to_list(1..4_000_000)} end

      reports =
        measure(
          context,
          fn -> {context.few, message.()} end,
          fn {pids, message} -> Fanout.send(pids, message, unquote(opts)) end,
          length(context.few)
        )

      assert reports == []
    end
  end

  # Runs `fun.(setup.())` in a fresh caller with a big heap, and returns the
  # long_schedule reports of the caller and of every process of the application's
  # fan-out instance (and their long_gc reports) from the call until the receivers got
  # `deliveries` more messages; again, up to three runs, while there are reports.
  defp measure(context, setup, fun, deliveries),
    do:
      LongSchedule.retried(
        3,
        fn -> measure_once(context, setup, fun, deliveries) end,
        &(&1 == [])
      )

  defp measure_once(%{counter: counter}, setup, fun, deliveries) do
    before = :counters.get(counter, 1)
    {pid, _ref} = caller = LongSchedule.spawn_ready(setup, fun, min_heap_words: 40_000_000)
    watch = SchedulerWatch.start(Fanout, [pid], @threshold_ms)
    assert LongSchedule.run(caller) == :ok
    FanoutFaults.wait_until(fn -> :counters.get(counter, 1) - before >= deliveries end)
    reports = SchedulerWatch.stop(watch)
    # The caller exits only once the watching is over: freeing its big heap takes a while.
    LongSchedule.stop(caller)
    reports
  end

  defp count_all(counter) do
    receive do
      _ ->
        :counters.add(counter, 1, 1)
        count_all(counter)
    end
  end
end

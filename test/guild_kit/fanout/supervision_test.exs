defmodule GuildKit.Fanout.SupervisionTest do
  # The supervision tree of an instance, as :supervisor.which_children/1 and observer
  # show it, and restart intensities that bursts of crashes cannot exceed. Each test
  # runs its own instance, so the application's stays untouched.
  use ExUnit.Case, async: true

  alias GuildKit.Fanout
  alias GuildKit.Fanout.{Partition, Partitioner, Runtime, Sender, Worker}
  alias GuildKit.Test.{FanoutFaults, Receivers}

  setup context do
    name = Module.concat(__MODULE__, "F#{System.unique_integer([:positive])}")
    opts = Map.get(context, :opts, senders: 3, partitioners: 2, workers: 4)
    {:ok, top} = start_supervised({Fanout, [name: name] ++ opts})
    %{name: name, top: top}
  end

  # A supervisor's children; none while it is itself being restarted or shut down.
  defp children(sup) when is_pid(sup) do
    :supervisor.which_children(sup)
  catch
    :exit, _ -> []
  end

  defp children(_restarting), do: []

  # Every fan-out process of the instance, by kind.
  defp processes(top) do
    {senders_sup, partitions} =
      children(top)
      |> Enum.split_with(fn {id, _, _, _} -> id == :senders end)
      |> then(fn
        {[{:senders, sup, :supervisor, _}], partitions} -> {sup, partitions}
        {[], partitions} -> {nil, partitions}
      end)

    partitions =
      for {{Partition, _}, partition, :supervisor, [Partition]} <- Enum.sort(partitions) do
        inside = Map.new(children(partition), fn {id, pid, _, _} -> {id, pid} end)
        partitioner = Map.get(inside, Partitioner)
        workers_sup = Map.get(inside, :workers)
        workers = for {{Worker, _}, pid, :worker, [Worker]} <- children(workers_sup), do: pid

        %{
          partition: partition,
          partitioner: partitioner,
          workers_sup: workers_sup,
          workers: workers
        }
      end

    senders = for {{Sender, _}, pid, :worker, [Sender]} <- children(senders_sup), do: pid
    %{senders_sup: senders_sup, senders: senders, partitions: partitions}
  end

  test "which_children shows partitions, their partitioner and workers, and the senders",
       %{name: name, top: top} do
    assert Process.whereis(Module.concat(name, Supervisor)) == top
    tree = processes(top)
    assert length(tree.senders) == 3
    assert length(tree.partitions) == 2
    assert Enum.all?(tree.partitions, &(length(&1.workers) == 4))
    runtime = Runtime.fetch!(name)

    assert Enum.map(tree.partitions, & &1.partitioner) ==
             runtime.partitioners |> Tuple.to_list() |> Enum.map(&Process.whereis/1)

    assert tree.senders |> Enum.sort() ==
             runtime.senders |> Tuple.to_list() |> Enum.map(&Process.whereis/1) |> Enum.sort()

    assert %{active: 3, supervisors: 3, workers: 0} = Supervisor.count_children(top)
  end

  test "a partitioner's death restarts its workers, which are dead before it restarts",
       %{name: name, top: top} do
    [%{partitioner: partitioner, workers: workers} | _] = processes(top).partitions
    refs = Enum.map(workers, &Process.monitor/1)
    Process.exit(partitioner, :kill)
    # Each old worker goes down; then the partition is back, with new processes only.
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 5_000)
    [%{partitioner: new_partitioner, workers: new_workers} | _] = wait_complete(top)
    assert new_partitioner != partitioner
    assert MapSet.disjoint?(MapSet.new(new_workers), MapSet.new(workers))
    assert Process.whereis(elem(Runtime.fetch!(name).partitioners, 0)) == new_partitioner
  end

  test "four sender kills within 5 s, and bursts of kills of every process, are absorbed",
       %{name: name, top: top} do
    for _ <- 1..4 do
      wait_complete(top)
      [sender | _] = processes(top).senders
      kill_all([sender])
    end

    # Bursts: every sender, partitioner and worker killed at once, ten times in a row,
    # as fast as they come back.
    for _ <- 1..10 do
      wait_complete(top)
      tree = processes(top)
      victims = tree.senders ++ Enum.flat_map(tree.partitions, &[&1.partitioner | &1.workers])
      kill_all(victims)
    end

    wait_complete(top)
    assert Process.whereis(Module.concat(name, Supervisor)) == top
    assert Process.alive?(top)

    assert_delivers(name, 100)
  end

  test "a restart waits for a process of the killed tree that still holds its name",
       %{name: name} do
    # Under a parent as strict as OTP's default (3 restarts in 5 s), where a restart that
    # failed on the name again and again would make the parent give up.
    name = Module.concat(name, "Strict")
    instance = {Fanout, name: name, senders: 3, partitioners: 2, workers: 4}
    strict = [strategy: :one_for_one, max_restarts: 3, max_seconds: 5]

    parent =
      start_supervised!(%{
        id: :strict,
        type: :supervisor,
        restart: :temporary,
        start: {Supervisor, :start_link, [[instance], strict]}
      })

    top = Process.whereis(Module.concat(name, Supervisor))
    wait_complete(top)
    [%{partition: old_partition, partitioner: old} | _] = processes(top).partitions
    # Not scheduled, the old partition's supervisor cannot act on its parent's exit: its
    # partitioner keeps its registered name while the instance is started again.
    true = :erlang.suspend_process(old_partition)
    ref = Process.monitor(top)
    Process.exit(top, :kill)
    assert_receive {:DOWN, ^ref, :process, ^top, :killed}

    # The new instance's first partitioner waits for the name; once the old partition
    # runs, it shuts its partitioner down, which gives way.
    Process.sleep(100)
    assert Process.alive?(old)
    true = :erlang.resume_process(old_partition)

    FanoutFaults.wait_until(fn ->
      new_top = Process.whereis(Module.concat(name, Supervisor))
      is_pid(new_top) and new_top != top and match?([_, _], processes(new_top).partitions)
    end)

    new_top = Process.whereis(Module.concat(name, Supervisor))
    wait_complete(new_top)
    refute Process.alive?(old)
    assert Process.alive?(parent)

    assert_delivers(name, 10)
  end

  test "send/3 raises for an instance that is not running, even when its process names resolve" do
    Process.flag(:trap_exit, true)
    name = Module.concat(__MODULE__, "Clash#{System.unique_integer([:positive])}")
    # This process holds the name of the instance's one partitioner, so the start fails.
    Process.register(self(), Runtime.child_name(name, "Partitioner", 0))
    assert {:error, _reason} = Fanout.start_link(name: name, partitioners: 1, senders: 1)

    error = assert_raise ArgumentError, fn -> Fanout.send(self(), :lost, name: name) end
    assert error.message =~ "is not running"
    refute_received {:"$gen_cast", _}
  end

  test "restart intensities grow with the number of children" do
    assert Runtime.intensity(4) == [max_restarts: 400, max_seconds: 1]
    assert Runtime.intensity(1) == [max_restarts: 100, max_seconds: 1]
  end

  # The instance `name` delivers one message to each of `count` new receivers.
  defp assert_delivers(name, count) do
    {group, pids} = Receivers.start(count)
    :ok = Fanout.send(pids, :still_here, name: name)
    assert Enum.all?(Receivers.await(group, count), fn {_, m} -> m == [:still_here] end)
    Receivers.stop(group)
  end

  # Kills `pids` and waits until each is dead.
  defp kill_all(pids) do
    refs = Enum.map(pids, &Process.monitor/1)
    Enum.each(pids, &Process.exit(&1, :kill))
    for ref <- refs, do: assert_receive({:DOWN, ^ref, :process, _, _}, 5_000)
  end

  # Waits until every process of the instance is up again (its supervisor may still list
  # a dead one for a moment), and its partitioners know their workers; returns the
  # partitions.
  defp wait_complete(top, tries \\ 5_000) do
    tree = processes(top)
    running? = &(is_pid(&1) and Process.alive?(&1))

    complete? =
      Enum.all?(tree.partitions, fn %{partitioner: p, workers: workers} ->
        running?.(p) and length(workers) == 4 and Enum.all?(workers, running?) and
          FanoutFaults.workers_announced?(p)
      end) and length(tree.partitions) == 2 and length(tree.senders) == 3 and
        Enum.all?(tree.senders, running?)

    cond do
      complete? ->
        tree.partitions

      tries > 0 ->
        Process.sleep(2)
        wait_complete(top, tries - 1)

      true ->
        flunk("the instance did not come back")
    end
  end
end

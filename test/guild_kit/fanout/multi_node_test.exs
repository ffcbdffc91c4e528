defmodule GuildKit.Fanout.MultiNodeTest do
  # Fan-out across peer nodes started with :peer on 127.0.0.1, each running :guild_kit.
  use ExUnit.Case, async: false

  alias GuildKit.Fanout
  alias GuildKit.Examples.PeerNode

  alias GuildKit.Test.{
    FakePids,
    FanoutFaults,
    LongSchedule,
    Receivers,
    SchedulerWatch,
    TermGenerator
  }

  @moduletag :slow

  @modes [[], [pack: :binary], [offload: true], [offload: true, pack: :binary]]

  setup_all do
    # The peers are linked to this setup_all process, which lives as long as the module.
    %{peers: PeerNode.start_many(2)}
  end

  # `count` receivers on each node given: the groups and all their pids.
  defp receivers_on(nodes, count) do
    groups = spread_receivers(nodes, count)
    {groups, Enum.flat_map(groups, fn {_node, _group, pids} -> pids end)}
  end

  # Starts `count` receivers on each node given.
  defp spread_receivers(nodes, count) do
    for node <- nodes do
      {group, pids} = on(node, Receivers, :start, [count])
      {node, group, pids}
    end
  end

  defp await(node, group, total), do: on(node, Receivers, :await, [group, total])

  # Calls `module.function(args)` on `node`, this one or a peer.
  defp on(node, module, function, args) do
    if node == node(),
      do: apply(module, function, args),
      else: PeerNode.call(node, module, function, args)
  end

  # A process that runs `call` when told `:go` and sends back its result, with a heap
  # made for 16M words first (what it captures is copied in when it is spawned).
  defp ready_caller(call) do
    parent = self()

    :erlang.spawn_opt(
      fn ->
        receive do: (:go -> send(parent, {:sent, self(), call.()}))
      end,
      min_heap_size: 16_000_000
    )
  end

  defp stop_receivers(groups) do
    for {node, group, _pids} <- groups,
        Node.ping(node) == :pong or node == node(),
        do: on(node, Receivers, :stop, [group])
  end

  defp peer_stats(node), do: PeerNode.call(node, Fanout, :stats, [])

  # Senders count drops asynchronously; a call to each returns once it has handled
  # everything sent to it before.
  defp sync_senders do
    for name <- Tuple.to_list(GuildKit.Fanout.Runtime.get().senders), do: :sys.get_state(name)
    :ok
  end

  test "receivers on three nodes each get every message once, in order, in all modes",
       %{peers: peers} do
    TermGenerator.seed!("multi-node mixed-mode", 4_242)
    {groups, all} = receivers_on([node() | Enum.map(peers, & &1.node)], 400)
    before = Map.new(peers, &{&1.node, peer_stats(&1.node)})

    for i <- 1..200 do
      :ok = Fanout.send(Enum.shuffle(all), {:seq, i}, Enum.random(@modes))
    end

    expected = for i <- 1..200, do: {:seq, i}

    for {node, group, _pids} <- groups do
      results = await(node, group, 200 * 400)
      assert Enum.all?(results, fn {_pid, messages} -> messages == expected end)
    end

    # Each peer's partitioner got its receivers once per message, none twice.
    for %{node: node} <- peers do
      grew = peer_stats(node).delivered_to_workers - before[node].delivered_to_workers
      assert grew == 200 * 400
    end

    stop_receivers(groups)
  end

  test "sends to a few receivers and to many keep one order per receiver, on every node",
       %{peers: peers} do
    # A few receivers with a small message go to the partitioner and sender as lists,
    # without the caller's NIF split; a long list or a big message takes the split.
    # Both must reach each receiver in the order they were sent.
    TermGenerator.seed!("few and many receivers", 5_151)
    {groups, all} = receivers_on([node() | Enum.map(peers, & &1.node)], 40)
    big = Enum.to_list(1..300)

    sent =
      for i <- 1..400 do
        receivers =
          if rem(i, 4) == 0,
            do: all,
            else: Enum.take_random(all, :rand.uniform(8)) ++ [nil]

        message = if rem(i, 5) == 0, do: {:seq, i, big}, else: {:seq, i}
        :ok = Fanout.send(receivers, message, Enum.random(@modes))
        {i, receivers}
      end

    expected =
      for {i, receivers} <- Enum.reverse(sent), pid <- receivers, pid != nil, reduce: %{} do
        acc -> Map.update(acc, pid, [i], &[i | &1])
      end

    for {node, group, pids} <- groups do
      total = pids |> Enum.map(&length(Map.get(expected, &1, []))) |> Enum.sum()

      for {pid, messages} <- await(node, group, total) do
        assert Enum.map(messages, &elem(&1, 1)) == Map.get(expected, pid, [])
      end
    end

    stop_receivers(groups)
  end

  test "a peer stopped mid-run leaves the sender and the other nodes working",
       %{peers: peers} do
    doomed = PeerNode.start()
    nodes = [node(), doomed.node | Enum.map(peers, & &1.node)]
    [local, doomed_group | others] = spread_receivers(nodes, 300)
    all = Enum.flat_map([local, doomed_group | others], fn {_, _, pids} -> pids end)
    parent = self()

    sender =
      spawn_link(fn ->
        for i <- 1..300 do
          if i == 100, do: send(parent, :stop_now)
          :ok = Fanout.send(all, {:seq, i}, if(rem(i, 2) == 0, do: [offload: true], else: []))
          Process.sleep(2)
        end

        send(parent, {:sender_done, self()})
      end)

    assert_receive :stop_now, 30_000
    PeerNode.stop(doomed)
    # The sending process finished its loop: no send blocked or raised.
    assert_receive {:sender_done, ^sender}, 60_000

    expected = for i <- 1..300, do: {:seq, i}

    for {node, group, _pids} <- [local | others] do
      results = await(node, group, 300 * 300)
      assert Enum.all?(results, fn {_pid, messages} -> messages == expected end)
    end

    # Once the node is known down, its receivers are dropped and counted, exactly.
    sync_senders()
    dropped = Fanout.stats().dropped
    {_, _, doomed_pids} = doomed_group
    :ok = Fanout.send(doomed_pids ++ elem(local, 2), :after_stop)
    :ok = Fanout.send(doomed_pids, :after_stop, offload: true)
    results = Receivers.await(elem(local, 1), 300 * 300 + 300)
    assert Enum.all?(results, fn {_pid, messages} -> List.last(messages) == :after_stop end)
    sync_senders()
    assert Fanout.stats().dropped - dropped == 2 * 300

    stop_receivers([local | others])
  end

  test "a hung peer holds up neither the sender nor the other nodes, and loses nothing" do
    hung = PeerNode.start()
    os_pid = PeerNode.call(hung.node, :os, :getpid, []) |> List.to_string()
    on_exit(fn -> System.cmd("kill", ["-CONT", os_pid]) end)
    {hung_group, hung_pids} = PeerNode.call(hung.node, Receivers, :start, [10])
    {local_group, local_pids} = Receivers.start(10)
    # 80 messages of 300 KB for a stopped node: far more than the socket buffers and
    # the 1 MB distribution buffer hold, so its sends must wait in the sender's queue.
    payload = :binary.copy("x", 300_000)

    {0, 0} =
      System.cmd("kill", ["-STOP", os_pid]) |> then(fn {out, code} -> {byte_size(out), code} end)

    for i <- 1..80 do
      :ok = Fanout.send(hung_pids ++ local_pids, {i, payload})
    end

    # Every local receiver got all 80 while the peer is stopped: nothing waited for it.
    expected = Enum.to_list(1..80)
    local = Receivers.await(local_group, 80 * 10, 30_000, only: :tag)
    assert Enum.all?(local, fn {_pid, messages} -> messages == expected end)
    # The sender really met a full buffer and queued for that node alone.
    sender =
      elem(
        Fanout.Runtime.get().senders,
        :erlang.phash2(self(), tuple_size(Fanout.Runtime.get().senders))
      )

    assert Map.has_key?(:sys.get_state(sender).waiting, hung.node)

    {_, 0} = System.cmd("kill", ["-CONT", os_pid])

    hung_results =
      PeerNode.call(hung.node, Receivers, :await, [hung_group, 80 * 10, 60_000, [only: :tag]])

    assert Enum.all?(hung_results, fn {_pid, messages} -> messages == expected end)
    sync_senders()
    refute Map.has_key?(:sys.get_state(sender).waiting, hung.node)
    Receivers.stop(local_group)
    PeerNode.stop(hung)
  end

  test "pids of a node that was never connected are dropped without an attempt to connect" do
    # An unroutable address: connecting would hang until the setup timeout.
    ghosts = FakePids.pids(:"ghost@10.255.255.1", 1_000)
    {group, pids} = Receivers.start(100)
    dropped = Fanout.stats().dropped

    :ok = Fanout.send(ghosts ++ pids, :hello)
    :ok = Fanout.send(pids ++ ghosts, :again, offload: true)

    assert Enum.all?(Receivers.await(group, 200), fn {_, messages} ->
             messages == [:hello, :again]
           end)

    sync_senders()
    assert Fanout.stats().dropped - dropped == 2_000
    refute :"ghost@10.255.255.1" in Node.list([:visible, :hidden, :connected])
    Receivers.stop(group)
  end

  test "big messages reach other nodes in parts, in order with small ones, in every mode",
       %{peers: peers} do
    {groups, all} = receivers_on(Enum.map(peers, & &1.node), 3)
    # A big term (about 5 MB packed), and a 2 MB binary (small on the heap, big on the
    # wire): both travel in parts.
    big = Enum.to_list(1..1_000_000)
    binary = :binary.copy("b", 2_000_000)

    messages =
      for i <- 1..12 do
        case rem(i, 3) do
          0 -> {i, big}
          1 -> {i, :small}
          2 -> {i, binary}
        end
      end

    tracers =
      for %{node: node} <- peers do
        partitioner = PeerNode.call(node, Fanout.Runtime, :partitioner_name, [0])
        {node, PeerNode.call(node, SchedulerWatch, :trace_sizes, [partitioner])}
      end

    for {message, i} <- Enum.with_index(messages) do
      :ok = Fanout.send(all, message, Enum.at(@modes, rem(i, 4)))
    end

    expected = for message <- messages, do: {elem(message, 0), :erlang.phash2(message)}

    for {node, group, _pids} <- groups do
      results = PeerNode.call(node, Receivers, :await, [group, 12 * 3, 60_000, [only: :digest]])
      assert Enum.all?(results, fn {_pid, digests} -> digests == expected end)
    end

    # No message a peer's partitioner got was big: its decoding never holds it long.
    for {node, tracer} <- tracers do
      assert PeerNode.call(node, SchedulerWatch, :stop_trace, [tracer]) < 300 * 1024
    end

    # Each peer's partitioner forgot the parts once the message was delivered.
    for %{node: node} <- peers do
      partitioner = PeerNode.call(node, Fanout.Runtime, :partitioner_name, [0])
      assert PeerNode.call(node, :sys, :get_state, [partitioner]).parts == %{}
    end

    stop_receivers(groups)
  end

  test "order holds while senders here and partitioners there are killed", %{peers: peers} do
    TermGenerator.seed!("multi-node order-under-kills", 77_001)
    nodes = Enum.map(peers, & &1.node)
    groups = spread_receivers([node() | nodes], 10)
    # 10 pids per node, each listed 1,500 times: 45,000 entries.
    receivers =
      groups
      |> Enum.flat_map(fn {_node, _group, pids} -> pids end)
      |> List.duplicate(1_500)
      |> List.flatten()
      |> Enum.shuffle()

    senders = Tuple.to_list(Fanout.Runtime.get().senders)
    partitioner = Fanout.Runtime.partitioner_name(0)

    # Kills a sender of this node or a partitioner of a peer.
    killer =
      FanoutFaults.start_killer(fn ->
        if :rand.uniform(2) == 1,
          do: Process.whereis(Enum.random(senders)),
          else: PeerNode.call(Enum.random(nodes), Process, :whereis, [partitioner])
      end)

    for seq <- 1..100 do
      :ok = Fanout.send(receivers, {:seq, seq}, Enum.random(@modes))
      Process.sleep(3)
    end

    assert FanoutFaults.stop_killer(killer) >= 10

    # Once what the kills left in flight is delivered (every node quiet) and every killed
    # process is back, nothing more may be lost: each receiver gets exactly 1,500 of
    # each. A peer is asked over the link its kills took, so it sees them first.
    totals = for {node, group, _pids} <- groups, do: on(node, Receivers, :settle, [group, 300])
    for node <- [node() | nodes], do: on(node, FanoutFaults, :await_running, [])
    for seq <- 101..105, do: :ok = Fanout.send(receivers, {:seq, seq}, Enum.random(@modes))

    for {{node, group, _pids}, total} <- Enum.zip(groups, totals) do
      node
      |> on(Receivers, :await, [group, total + 5 * 15_000])
      |> FanoutFaults.assert_ordered(1_500, 101..105)
    end

    stop_receivers(groups)
  end

  test "a partitioner key keeps one order across processes for other nodes' receivers",
       %{peers: peers} do
    # An instance with 8 senders on every node: processes without a shared key would
    # mostly go through different senders.
    name = __MODULE__.Keyed
    opts = [name: name, senders: 8, partitioners: 3, workers: 2]
    local = Receivers.start_fanout(opts)

    remote =
      for %{node: node} <- peers,
          do: {node, PeerNode.call(node, Receivers, :start_fanout, [opts])}

    on_exit(fn ->
      for {node, pid} <- remote, do: PeerNode.call(node, Process, :exit, [pid, :shutdown])
      Process.exit(local, :shutdown)
    end)

    {groups, all} = receivers_on(Enum.map(peers, & &1.node), 200)

    FanoutFaults.relay(
      all,
      200,
      4,
      fn _ -> Fanout.set_partitioner_key({:guild, 1}) end,
      fn seq -> [name: name] ++ Enum.at(@modes, rem(seq, 4)) end
    )

    expected = for seq <- 1..200, do: {:seq, seq}

    for {node, group, _pids} <- groups do
      results = await(node, group, 200 * 200)
      assert Enum.all?(results, fn {_pid, messages} -> messages == expected end)
    end

    stop_receivers(groups)
  end

  test "100k receivers on a peer reach it in bounded chunks", %{peers: peers} do
    # The cause of a long schedule in a peer's partitioner would be a big message to
    # decode (its decoding does not yield): none may be.
    [%{node: peer} | _] = peers
    [{_, group, pids}] = spread_receivers([peer], 500)
    # 100,000 receiver entries: 500 pids, each listed 200 times.
    many = pids |> List.duplicate(200) |> List.flatten()
    partitioner = PeerNode.call(peer, Fanout.Runtime, :partitioner_name, [0])

    for opts <- [[], [offload: true], [pack: :binary]] do
      before = PeerNode.call(peer, Receivers, :received, [group])
      tracer = PeerNode.call(peer, SchedulerWatch, :trace_sizes, [partitioner])
      :ok = Fanout.send(many, :event, opts)

      FanoutFaults.wait_until(fn ->
        PeerNode.call(peer, Receivers, :received, [group]) >= before + 100_000
      end)

      # 4,096 pids a chunk, under 50 bytes each in the external format (less on the wire,
      # where the node name is cached): some 200 KB at most, decoded in well under 1 ms.
      assert PeerNode.call(peer, SchedulerWatch, :stop_trace, [tracer]) < 256 * 1024
    end

    PeerNode.call(peer, Receivers, :stop, [group])
  end

  # Up to three watched deliveries of each of six kinds.
  @tag timeout: 300_000
  test "no fan-out process here or on a peer holds a scheduler", %{peers: peers} do
    # 100,000 receiver entries on a peer (500 pids, each listed 200 times), and a
    # 4M-element message to a few of them; every fan-out process of both nodes, and the
    # caller, watched until all is delivered.
    [%{node: peer} | _] = peers
    [{_, group, pids}] = spread_receivers([peer], 500)
    many = pids |> List.duplicate(200) |> List.flatten()
    big = {:big, Enum.to_list(1..4_000_000)}

    for {receivers, message} <- [{many, :event}, {Enum.take(pids, 2), big}],
        opts <- [[], [offload: true], [pack: :binary]] do
      assert LongSchedule.retried(
               3,
               fn -> watched_delivery(peer, group, receivers, message, opts) end,
               &(&1 == {[], []})
             ) == {[], []}
    end

    PeerNode.call(peer, Receivers, :stop, [group])
  end

  # Sends `message` and waits for its delivery on `peer` while the fan-out processes of
  # both nodes are watched; returns the `{local, remote}` reports.
  defp watched_delivery(peer, group, receivers, message, opts) do
    before = PeerNode.call(peer, Receivers, :received, [group])
    remote = PeerNode.call(peer, SchedulerWatch, :start, [Fanout, [], 5])
    # The caller is a process of its own whose heap holds the message without a
    # collection: this test process also polls the peer, and a collection of its copy
    # of the 4M-element message would be its own cost, not the call's.
    caller = ready_caller(fn -> Fanout.send(receivers, message, opts) end)
    local = SchedulerWatch.start(Fanout, [caller], 5)

    outcome =
      try do
        send(caller, :go)
        assert_receive {:sent, ^caller, :ok}, 30_000

        FanoutFaults.wait_until(fn ->
          PeerNode.call(peer, Receivers, :received, [group]) >= before + length(receivers)
        end)
      catch
        kind, reason -> {:failed, kind, reason, __STACKTRACE__}
      end

    # Stopped whatever happened: a watch left running would keep tracing the peer's
    # fan-out processes, and no other tracer could trace them after it.
    reports = {SchedulerWatch.stop(local), PeerNode.call(peer, SchedulerWatch, :stop, [remote])}

    with {:failed, kind, reason, stacktrace} <- outcome,
         do: :erlang.raise(kind, reason, stacktrace)

    reports
  end
end

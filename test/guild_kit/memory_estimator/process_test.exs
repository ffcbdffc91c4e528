defmodule GuildKit.MemoryEstimator.ProcessTest do
  use ExUnit.Case, async: true

  alias GuildKit.MemoryEstimator

  defmodule Server do
    use GenServer

    def start_link(arg), do: GenServer.start_link(__MODULE__, arg)

    @impl true
    def init({:members, n}),
      do: {:ok, %{members: Map.new(1..n, &{&1, %{nick: "n#{&1}"}}), name: "g"}}

    def init(state), do: {:ok, state}

    @impl true
    def handle_call(:ping, _from, state), do: {:reply, :pong, state}
    def handle_call(:hibernate, _from, state), do: {:reply, :ok, state, :hibernate}

    # Busy until told `:unblock`: tells `notify` first, so a test knows it is.
    def handle_call({:block, notify}, _from, state) do
      unblocked(notify)
      {:reply, :ok, state}
    end

    def handle_call({:block_then_stop, notify}, _from, state) do
      unblocked(notify)
      {:stop, :normal, :ok, state}
    end

    defp unblocked(notify) do
      send(notify, {:blocked, self()})
      receive do: (:unblock -> :ok)
    end
  end

  defmodule Machine do
    @behaviour :gen_statem
    def start_link(data), do: :gen_statem.start_link(__MODULE__, data, [])
    @impl true
    def callback_mode, do: :state_functions
    @impl true
    def init(data), do: {:ok, :idle, data}
    def idle({:call, from}, :ping, data), do: {:keep_state, data, [{:reply, from, :pong}]}
  end

  # Suspends `pid` where it replies to a :sys.get_state/1 request from `sink`, asking
  # again each time it is caught idle, if it gets there before `deadline` (ms);
  # returns whether it did.
  defp suspend_replying(pid, sink, deadline) do
    true = :erlang.suspend_process(pid)

    [current_stacktrace: stack, message_queue_len: queued] =
      Process.info(pid, [:current_stacktrace, :message_queue_len])

    cond do
      match?([{:gen, :reply, _, _}, {:sys, :handle_system_msg, _, _} | _], stack) ->
        true

      System.monotonic_time(:millisecond) > deadline ->
        :erlang.resume_process(pid)
        false

      true ->
        if queued == 0 and match?([{:gen_server, :loop, _, _} | _], stack),
          do: send(pid, {:system, {sink, make_ref()}, :get_state})

        :erlang.resume_process(pid)
        suspend_replying(pid, sink, deadline)
    end
  end

  defp mailbox, do: Process.info(self(), :messages) |> elem(1)

  # Makes `server` busy with a request of `client.(request)` until it is sent :unblock.
  defp block(server, request, client) do
    me = self()
    result = client.({request, me})
    assert_receive {:blocked, ^server}, 10_000
    result
  end

  test "measures the state inside the process, which keeps it and keeps serving" do
    {:ok, server} = Server.start_link({:members, 100_000})
    before = :sys.get_state(server)
    state_words = :erts_debug.flat_size(before)

    # Measured from a fresh process: its heap starts at a few hundred words, so anything
    # the size of the state reaching it shows, whatever a collection does to the heap
    # of this process, which holds a copy of the state.
    {heap_words, mailbox, result} =
      Task.async(fn ->
        result = MemoryEstimator.process(server)
        {:total_heap_size, heap_words} = Process.info(self(), :total_heap_size)
        {heap_words, mailbox(), result}
      end)
      |> Task.await()

    assert {:ok, [{[], total}, {[:members], members}, {[:name], _}]} = result
    assert heap_words < div(state_words, 10)
    assert mailbox == []

    assert abs(total.words - state_words) / state_words < 0.02
    assert members.words < total.words
    assert :sys.get_state(server) == before
    assert GenServer.call(server, :ping) == :pong
    assert Process.info(server, :message_queue_len) == {:message_queue_len, 0}
  end

  test "a process still answering another system message is a :sys process" do
    {:ok, server} = Server.start_link({:members, 100_000})

    sink =
      spawn_link(fn -> Stream.repeatedly(fn -> receive do: (_ -> :ok) end) |> Stream.run() end)

    # Caught while it sends its reply to :sys.get_state/1 (the copy of its state takes
    # milliseconds), with only :gen and :sys on its stack.
    assert suspend_replying(server, sink, System.monotonic_time(:millisecond) + 10_000)
    measuring = Task.async(fn -> MemoryEstimator.process(server) end)
    Process.sleep(20)
    :erlang.resume_process(server)

    assert {:ok, [{[], _total} | _]} = Task.await(measuring)
    assert GenServer.call(server, :ping) == :pong
  end

  test "takes the options of breakdown/2" do
    {:ok, server} = Server.start_link({:members, 1000})
    assert {:ok, [{[], root}]} = MemoryEstimator.process(server, depth: 0)

    assert {:ok, [{[], ^root}, {[:members], _}]} =
             MemoryEstimator.process(server, min_bytes: 1000)

    assert {:ok, [{[], exact} | _]} = MemoryEstimator.process(server, samples: 10_000)
    assert exact.exact?
    assert exact.words == :erts_debug.flat_size(:sys.get_state(server))
  end

  test "names: registered, {name, node}, :global and :via" do
    {:ok, server} = Server.start_link(%{a: 1})
    name = :"estimator_process_test_#{System.unique_integer([:positive])}"
    Process.register(server, name)
    :yes = :global.register_name({__MODULE__, name}, server)
    {:ok, _} = Registry.start_link(keys: :unique, name: Module.concat(__MODULE__, name))
    {:ok, _} = Registry.register(Module.concat(__MODULE__, name), :me, nil)

    for target <- [name, {name, node()}, {:global, {__MODULE__, name}}] do
      assert {:ok, [{[], %{words: 6}} | _]} = MemoryEstimator.process(target)
    end

    # The test process is registered under :via; measuring itself is refused.
    assert {:error, :calling_self} =
             MemoryEstimator.process({:via, Registry, {Module.concat(__MODULE__, name), :me}})

    :global.unregister_name({__MODULE__, name})
  end

  test "a dead or unknown process" do
    {pid, ref} = spawn_monitor(fn -> :ok end)
    assert_receive {:DOWN, ^ref, :process, ^pid, :normal}

    assert MemoryEstimator.process(pid) == {:error, :noproc}
    assert MemoryEstimator.process(:no_such_process_registered) == {:error, :noproc}
    assert MemoryEstimator.process({:no_such_process_registered, node()}) == {:error, :noproc}
    assert MemoryEstimator.process({:global, {__MODULE__, :nobody}}) == {:error, :noproc}
  end

  test "a process that exits while the request waits" do
    {:ok, server} = GenServer.start(Server, %{a: 1})
    task = block(server, :block_then_stop, &Task.async(fn -> GenServer.call(server, &1) end))
    # Most likely while the request below waits (and :noproc all the same if not).
    spawn(fn ->
      Process.sleep(50)
      send(server, :unblock)
    end)

    assert MemoryEstimator.process(server, timeout: 2000) == {:error, :noproc}
    assert Task.await(task) == :ok
    assert mailbox() == []
  end

  test "processes that do not handle :sys messages are refused and sent nothing" do
    plain = spawn(fn -> receive do: (:stop -> :ok) end)
    task = Task.async(fn -> receive do: (:stop -> :ok) end)
    {:ok, manager} = :gen_event.start_link()
    {:ok, busy} = Server.start_link(%{})
    # A client that waits for its reply from now on.
    client = block(busy, :block, &spawn(fn -> GenServer.call(busy, &1, :infinity) end))

    for pid <- [plain, task.pid, manager, client] do
      assert MemoryEstimator.process(pid) == {:error, :not_sys_process}
    end

    for pid <- [plain, task.pid, client] do
      assert Process.info(pid, :messages) == {:messages, []}
    end

    send(task.pid, :stop)
    Task.await(task)
    Process.exit(client, :kill)
  end

  test "a slow process: a timeout, then no stray message and an unchanged state" do
    {:ok, server} = Server.start_link({:members, 1000})
    before = :sys.get_state(server)
    busy = block(server, :block, &Task.async(fn -> GenServer.call(server, &1) end))

    assert MemoryEstimator.process(server, timeout: 50) == {:error, :timeout}

    send(server, :unblock)
    Task.await(busy)
    # The server has now handled the request, after its deadline; a late reply would
    # have come before this one, from the same process.
    assert GenServer.call(server, :ping) == :pong
    assert mailbox() == []
    assert :sys.get_state(server) == before
  end

  test "a hibernating GenServer and a gen_statem" do
    {:ok, server} = Server.start_link({:members, 100})
    :ok = GenServer.call(server, :hibernate)
    assert {:ok, [{[], total} | _]} = MemoryEstimator.process(server)
    assert total.words == :erts_debug.flat_size(:sys.get_state(server))

    {:ok, machine} = Machine.start_link(%{count: 1})
    # A gen_statem's state is the tuple {state, data}: sized whole.
    assert {:ok, [{[], estimate}]} = MemoryEstimator.process(machine)
    assert estimate.words == :erts_debug.flat_size({:idle, %{count: 1}})
    assert :gen_statem.call(machine, :ping) == :pong
  end

  test "bad options and servers raise ArgumentError" do
    assert_raise ArgumentError, ~r/:timeout to be a non-negative integer, got: :infinity/, fn ->
      MemoryEstimator.process(self(), timeout: :infinity)
    end

    assert_raise ArgumentError, ~r/expected a pid or a process name .* got: "server"/, fn ->
      MemoryEstimator.process("server")
    end
  end
end

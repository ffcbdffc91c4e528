defmodule GuildKit.Fanout.Runtime do
  # What callers of a GuildKit.Fanout instance need to reach its processes: the names
  # of its senders and partitioners, its worker count and its counters. The instance's
  # supervisor checks the options and publishes this in :persistent_term before any of
  # its processes starts; callers read it with one :persistent_term.get/2.
  @moduledoc false

  @enforce_keys [:name, :supervisor, :senders, :partitioners, :workers, :counters]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          name: atom(),
          supervisor: atom(),
          senders: tuple(),
          partitioners: tuple(),
          workers: pos_integer(),
          counters: :counters.counters_ref()
        }

  # Buckets the NIF accepts (guild_kit_core::partition::MAX_BUCKETS).
  @max_workers 65_536
  # Bounds that keep a typo from starting a million processes.
  @max_senders 1024
  @max_partitioners 1024

  @counters [:sent, :delivered_to_workers, :dropped, :worker_restarts]
  @counter_index @counters |> Enum.with_index(1) |> Map.new()

  # Restarts each supervisor allows per child and second (see intensity/1).
  @restarts_per_child 100
  # How long a restarted sender or partitioner waits for its predecessor to release
  # the registered name: the default shutdown time of a worker.
  @takeover_ms 5_000

  @doc """
  Checks the options of an instance, filling in defaults, and returns them as a
  keyword list with every key. Raises `ArgumentError` naming a bad value, its message
  prefixed with `context` when given.
  """
  @spec options!(term(), String.t()) :: keyword()
  def options!(opts, context \\ "") do
    schedulers = System.schedulers_online()

    opts =
      try do
        GuildKit.Describe.options!(opts,
          name: GuildKit.Fanout,
          senders: schedulers,
          partitioners: 1,
          workers: schedulers
        )
      rescue
        error in ArgumentError -> reraise ArgumentError, context <> error.message, __STACKTRACE__
      end

    unless is_atom(opts[:name]) and opts[:name] not in [nil, true, false] do
      raise ArgumentError,
            context <>
              "expected :name to be an atom, got: #{GuildKit.Describe.describe(opts[:name])}"
    end

    for {key, max} <- [
          senders: @max_senders,
          partitioners: @max_partitioners,
          workers: @max_workers
        ] do
      case opts[key] do
        count when is_integer(count) and count in 1..max ->
          :ok

        other ->
          raise ArgumentError,
                context <>
                  "expected #{GuildKit.Describe.describe(key)} to be an integer in 1..#{max}, got: #{GuildKit.Describe.describe(other)}"
      end
    end

    opts
  end

  @doc """
  Builds the runtime of the instance `opts` describes (checked by `options!/2`) and
  publishes it. The counters of an earlier run of the same instance are kept, so that
  statistics count from its first start. Called by the instance's supervisor before any
  of its processes starts, so never concurrently for one name.
  """
  @spec publish!(keyword()) :: t()
  def publish!(opts) do
    name = Keyword.fetch!(opts, :name)

    counters =
      case :persistent_term.get(key(name), nil) do
        %__MODULE__{counters: counters} -> counters
        nil -> :counters.new(length(@counters), [:write_concurrency])
      end

    runtime = %__MODULE__{
      name: name,
      # Built once: every send that checks the instance runs reads it.
      supervisor: supervisor_name(name),
      senders: names(name, "Sender", opts[:senders]),
      partitioners: names(name, "Partitioner", opts[:partitioners]),
      workers: opts[:workers],
      counters: counters
    }

    # An equal term is not rewritten, so a restart with the same options costs nothing
    # (a :persistent_term update makes every process scan its heap).
    if :persistent_term.get(key(name), nil) != runtime do
      :persistent_term.put(key(name), runtime)
    end

    runtime
  end

  defp names(name, kind, count),
    do: List.to_tuple(for i <- 0..(count - 1), do: child_name(name, kind, i))

  @doc """
  The runtime of instance `name`. Raises `ArgumentError` when no instance of that name
  ever started on this node.
  """
  @spec fetch!(atom()) :: t()
  def fetch!(name) do
    case :persistent_term.get(key(name), nil) do
      %__MODULE__{} = runtime -> runtime
      nil -> raise ArgumentError, not_running(name)
    end
  end

  @doc "The runtime of the instance the `:guild_kit` application starts."
  @spec get() :: t()
  def get, do: fetch!(GuildKit.Fanout)

  @doc "True while the supervisor of the instance runs."
  @spec running?(t()) :: boolean()
  def running?(%__MODULE__{supervisor: supervisor}), do: Process.whereis(supervisor) != nil

  @doc """
  The registered name of the supervisor of instance `name`: `GuildKit.Fanout.Supervisor`
  for the application's instance, `MyApp.Fanout.Supervisor` for `MyApp.Fanout`.
  """
  @spec supervisor_name(atom()) :: atom()
  def supervisor_name(name), do: Module.concat(name, Supervisor)

  @doc "The message of the `ArgumentError` raised when instance `name` is not running."
  @spec not_running(atom()) :: String.t()
  def not_running(GuildKit.Fanout) do
    "GuildKit.Fanout is not running: the :guild_kit application is stopped, or was " <>
      "started with config :guild_kit, start_fanout: false (then pass the :name of an " <>
      "instance started in your supervision tree)"
  end

  def not_running(name) do
    "the GuildKit.Fanout instance #{GuildKit.Describe.describe(name)} is not running: add " <>
      "{GuildKit.Fanout, name: #{GuildKit.Describe.describe(name)}} to a supervision tree"
  end

  defp key(name), do: {GuildKit.Fanout, name}

  @doc """
  The registered name of the `index`-th process of `kind` ("Sender", "Partitioner")
  of instance `name`, e.g. `GuildKit.Fanout.Partitioner.0`. Partitioner names are the
  same on every node, so a sender reaches partitioner `i` of any node by name.
  """
  @spec child_name(atom(), String.t(), non_neg_integer()) :: atom()
  def child_name(name, kind, index), do: Module.concat([name, kind, Integer.to_string(index)])

  @doc "The registered name of sender `index` of the application's instance."
  @spec sender_name(non_neg_integer()) :: atom()
  def sender_name(index), do: child_name(GuildKit.Fanout, "Sender", index)

  @doc "The registered name of partitioner `index` of the application's instance."
  @spec partitioner_name(non_neg_integer()) :: atom()
  def partitioner_name(index), do: child_name(GuildKit.Fanout, "Partitioner", index)

  @doc """
  Restart intensity for a supervisor of `children`: each child may die
  #{@restarts_per_child} times a second, all of them at once, before the supervisor
  gives up. Bursts of kills or crashes under load stay far below that; a child that
  fails on every start reaches it within milliseconds and escalates, as it should.
  """
  @spec intensity(pos_integer()) :: keyword()
  def intensity(children), do: [max_restarts: @restarts_per_child * children, max_seconds: 1]

  @doc """
  The child spec of the `index`-th process of `names` (a tuple of registered names):
  a GenServer of `module` (a sender or a partitioner) that takes `runtime` and
  registers under that name.
  """
  @spec server_spec(module(), t(), tuple(), non_neg_integer()) :: Supervisor.child_spec()
  def server_spec(module, runtime, names, index) do
    %{
      id: {module, index},
      start: {__MODULE__, :start_server, [module, runtime, elem(names, index)]},
      modules: [module]
    }
  end

  @doc """
  Starts a GenServer of `module`, registered as `name`. When an earlier incarnation of
  the same server still holds the name (a supervisor above it was killed, and it has not
  yet processed its exit signal), waits up to #{@takeover_ms} ms for it to go, then
  starts: otherwise every restart would fail on the name and exhaust the restart
  intensity of the supervisors above. A name held by any other process is an error at
  once.
  """
  @spec start_server(module(), t(), atom()) :: GenServer.on_start()
  def start_server(module, runtime, name) do
    case GenServer.start_link(module, runtime, name: name) do
      {:error, {:already_started, holder}} = error ->
        if incarnation?(holder, module) and exits?(holder, @takeover_ms),
          do: start_server(module, runtime, name),
          else: error

      started ->
        started
    end
  end

  defp incarnation?(pid, module) do
    case Process.info(pid, :dictionary) do
      {:dictionary, dictionary} -> dictionary[:"$initial_call"] == {module, :init, 1}
      nil -> true
    end
  end

  defp exits?(pid, timeout) do
    ref = Process.monitor(pid)

    receive do
      {:DOWN, ^ref, :process, ^pid, _reason} -> true
    after
      timeout ->
        Process.demonitor(ref, [:flush])
        false
    end
  end

  @doc "Adds `amount` to the counter `name` of `runtime`."
  @spec count(t(), atom(), integer()) :: :ok
  def count(%__MODULE__{counters: counters}, name, amount),
    do: :counters.add(counters, Map.fetch!(@counter_index, name), amount)

  @doc "All counters of `runtime` as a map."
  @spec read_counters(t()) :: %{atom() => non_neg_integer()}
  def read_counters(%__MODULE__{counters: counters}) do
    Map.new(@counters, fn name ->
      {name, :counters.get(counters, Map.fetch!(@counter_index, name))}
    end)
  end
end

defmodule GuildKit.Fanout.Runtime do
  # What every fan-out process and caller needs to know at run time: the process
  # counts read from the application environment when the component starts, the
  # registered names derived from them, and the statistics counters.
  #
  # It lives in :persistent_term, so a caller reads it in O(1) without copying. It is
  # rewritten only when the component (re)starts; the counters are created once per VM
  # so that statistics survive a restart.
  @moduledoc false

  @enforce_keys [:senders, :partitioners, :workers]
  defstruct [:senders, :partitioners, :workers]

  @type t :: %__MODULE__{
          senders: tuple(),
          partitioners: pos_integer(),
          workers: pos_integer()
        }

  @runtime_key {GuildKit.Fanout, :runtime}
  @counters_key {GuildKit.Fanout, :counters}

  # Buckets the NIF accepts (guild_kit_core::partition::MAX_BUCKETS).
  @max_workers 65_536
  # Bounds that keep a typo from starting a million processes.
  @max_senders 1024
  @max_partitioners 1024

  @not_running "GuildKit.Fanout is not running: start the :guild_kit application first"

  @counters [:sent, :delivered_to_workers, :dropped, :worker_restarts]
  @counter_index @counters |> Enum.with_index(1) |> Map.new()

  @doc """
  Reads and checks the `GuildKit.Fanout` entry of the `:guild_kit` application
  environment, filling in defaults. Raises `ArgumentError` naming a bad value.
  """
  @spec from_env!() :: t()
  def from_env! do
    env = Application.get_env(:guild_kit, GuildKit.Fanout, [])

    unless Keyword.keyword?(env) do
      raise ArgumentError,
            "expected config :guild_kit, GuildKit.Fanout to be a keyword list, got: " <>
              inspect(env)
    end

    schedulers = System.schedulers_online()

    env =
      try do
        Keyword.validate!(env, senders: schedulers, partitioners: 1, workers: schedulers)
      rescue
        error in ArgumentError ->
          reraise ArgumentError,
                  "bad config :guild_kit, GuildKit.Fanout: " <> Exception.message(error),
                  __STACKTRACE__
      end

    senders = count!(env, :senders, @max_senders)

    %__MODULE__{
      senders: List.to_tuple(Enum.map(0..(senders - 1), &sender_name/1)),
      partitioners: count!(env, :partitioners, @max_partitioners),
      workers: count!(env, :workers, @max_workers)
    }
  end

  defp count!(env, key, max) do
    case Keyword.fetch!(env, key) do
      count when is_integer(count) and count in 1..max ->
        count

      other ->
        raise ArgumentError,
              "bad config :guild_kit, GuildKit.Fanout: expected #{inspect(key)} to be an " <>
                "integer in 1..#{max}, got: #{inspect(other)}"
    end
  end

  @doc "Publishes `runtime` to callers."
  @spec put(t()) :: :ok
  def put(%__MODULE__{} = runtime) do
    # An equal term is not rewritten, so a restart with the same config costs nothing.
    if :persistent_term.get(@runtime_key, nil) != runtime do
      :persistent_term.put(@runtime_key, runtime)
    end

    :ok
  end

  @doc "The published runtime. Raises when the application never started."
  @spec get() :: t()
  def get do
    case :persistent_term.get(@runtime_key, nil) do
      %__MODULE__{} = runtime ->
        runtime

      nil ->
        raise RuntimeError, @not_running
    end
  end

  @doc "The registered name of sender `index`."
  @spec sender_name(non_neg_integer()) :: atom()
  def sender_name(index), do: Module.concat(GuildKit.Fanout.Sender, Integer.to_string(index))

  @doc """
  The registered name of partitioner `index`, on this node and on every other node
  (the `:partitioners` count must be the same on all nodes).
  """
  @spec partitioner_name(non_neg_integer()) :: atom()
  def partitioner_name(index),
    do: Module.concat(GuildKit.Fanout.Partitioner, Integer.to_string(index))

  @doc """
  Creates the statistics counters unless they exist. Called by the component
  supervisor before any fan-out process starts, so never concurrently.
  """
  @spec ensure_counters() :: :ok
  def ensure_counters do
    if :persistent_term.get(@counters_key, nil) == nil do
      :persistent_term.put(@counters_key, :counters.new(length(@counters), [:write_concurrency]))
    end

    :ok
  end

  @doc "The statistics counters. Raises when the application never started."
  @spec counters() :: :counters.counters_ref()
  def counters do
    case :persistent_term.get(@counters_key, nil) do
      nil -> raise RuntimeError, @not_running
      counters -> counters
    end
  end

  @doc "Adds `amount` to the counter `name`."
  @spec count(:counters.counters_ref(), atom(), integer()) :: :ok
  def count(counters, name, amount), do: :counters.add(counters, index!(name), amount)

  @doc "All counters as a map."
  @spec read_counters() :: %{atom() => non_neg_integer()}
  def read_counters do
    counters = counters()
    Map.new(@counters, fn name -> {name, :counters.get(counters, index!(name))} end)
  end

  defp index!(name), do: Map.fetch!(@counter_index, name)
end

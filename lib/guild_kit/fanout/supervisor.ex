defmodule GuildKit.Fanout.Supervisor do
  # Supervises the fan-out processes of this node: the partitioners (each of which
  # supervises its own workers, see GuildKit.Fanout.Partitioner) and the senders.
  #
  # The process counts are read from the application environment here, when the
  # component starts, and published through GuildKit.Fanout.Runtime.
  @moduledoc false

  use Supervisor

  alias GuildKit.Fanout.{Partitioner, Runtime, Sender}

  @doc """
  Starts the fan-out processes of this node, registered under this module's name.
  The `:guild_kit` application does this; the argument is ignored.
  """
  @spec start_link(term()) :: Supervisor.on_start()
  def start_link(_arg), do: Supervisor.start_link(__MODULE__, :ok, name: __MODULE__)

  @impl Supervisor
  def init(:ok) do
    runtime = Runtime.from_env!()
    Runtime.ensure_counters()

    partitioners =
      for index <- 0..(runtime.partitioners - 1) do
        Supervisor.child_spec({Partitioner, index: index, workers: runtime.workers},
          id: {Partitioner, index}
        )
      end

    senders =
      for index <- 0..(tuple_size(runtime.senders) - 1) do
        Supervisor.child_spec({Sender, index: index, partitioners: runtime.partitioners},
          id: {Sender, index}
        )
      end

    # Published before any child starts, so a sender never sees an older count.
    Runtime.put(runtime)
    Supervisor.init(partitioners ++ senders, strategy: :one_for_one)
  end
end

defmodule GuildKit.Fanout.Worker do
  # Delivers fan-out messages to the receivers of one bucket of a partitioner.
  #
  # A worker is started by the workers' supervisor of its partition (see
  # `GuildKit.Fanout.Partitioner`) and announces itself to its partitioner, which then
  # sends it batches `{batch, message}`: a native list of receivers and the message,
  # copied once for all of them. The worker sends the message to each receiver in turn,
  # in bounded NIF calls (on a dirty scheduler when the message is big). The batch
  # counts the receivers served, so the worker that replaces a dead one resumes where it
  # stopped, with no receiver skipped and none served twice.
  @moduledoc false

  use GenServer

  alias GuildKit.Native

  # After this long without a batch the worker hibernates, which shrinks its heap.
  @idle_ms 1_000

  @doc false
  @spec start_link({atom(), non_neg_integer()}) :: GenServer.on_start()
  def start_link(arg), do: GenServer.start_link(__MODULE__, arg)

  @doc false
  @spec deliver(pid(), reference(), reference()) :: :ok
  def deliver(worker, batch, message) do
    send(worker, {:guild_kit_fanout_deliver, batch, message})
    :ok
  end

  @impl GenServer
  def init({partitioner, index}) do
    # The partitioner is started first (see GuildKit.Fanout.Partition); when it is
    # gone, this partition is being restarted and this worker will be too.
    case Process.whereis(partitioner) do
      nil -> :ok
      pid -> send(pid, {:guild_kit_fanout_worker, index, self()})
    end

    {:ok, nil}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_deliver, batch, message}, state) do
    deliver_all(batch, message)
    {:noreply, state, @idle_ms}
  end

  def handle_info(:timeout, state), do: {:noreply, state, :hibernate}

  # Nothing else is sent to a worker; a stray message must not crash it.
  def handle_info(_other, state), do: {:noreply, state, @idle_ms}

  defp deliver_all(batch, message) do
    case Native.fanout_deliver(batch, message) do
      :done -> :ok
      :more -> deliver_all(batch, message)
    end
  end
end

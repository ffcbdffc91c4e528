defmodule GuildKit.Fanout.Worker do
  # Delivers fan-out messages to the local receivers of one bucket.
  #
  # A worker is started and linked by its `GuildKit.Fanout.Partitioner`, which sends it
  # batches `{receivers, payload}`. For each batch it unpacks the payload once and sends
  # the message to each receiver in turn.
  #
  # After each send it adds one to its progress counter, an `:atomics` owned by the
  # partitioner. If the worker dies, the partitioner reads that counter to find the
  # first receiver that was not served and replays from there to the worker that
  # replaces it. A kill can fall between a send and its count, so at most one receiver
  # per crash gets a message twice; none is skipped.
  @moduledoc false

  use GenServer

  # After this long without a batch the worker hibernates, which frees the garbage
  # of the last (possibly very large) batch.
  @idle_ms 1_000

  @doc false
  @spec start_link(:atomics.atomics_ref()) :: GenServer.on_start()
  def start_link(progress), do: GenServer.start_link(__MODULE__, progress)

  @doc false
  @spec deliver(pid(), [pid()], GuildKit.Fanout.payload()) :: :ok
  def deliver(worker, receivers, payload) do
    send(worker, {:guild_kit_fanout_batch, receivers, payload})
    :ok
  end

  @impl GenServer
  def init(progress) do
    {:ok, progress}
  end

  @impl GenServer
  def handle_info({:guild_kit_fanout_batch, receivers, payload}, progress) do
    send_all(receivers, GuildKit.Fanout.unpack(payload), progress)
    {:noreply, progress, @idle_ms}
  end

  def handle_info(:timeout, progress), do: {:noreply, progress, :hibernate}

  # Nothing else is sent to a worker; a stray message must not crash it.
  def handle_info(_other, progress), do: {:noreply, progress, @idle_ms}

  defp send_all([receiver | rest], message, progress) do
    send(receiver, message)
    # Counted after the send: a crash between the two repeats this one receiver
    # rather than skipping it.
    :atomics.add(progress, 1, 1)
    send_all(rest, message, progress)
  end

  defp send_all([], _message, _progress), do: :ok
end

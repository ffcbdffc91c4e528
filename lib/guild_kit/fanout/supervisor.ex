defmodule GuildKit.Fanout.Supervisor do
  # The supervisor of one GuildKit.Fanout instance, registered as <name>.Supervisor
  # (GuildKit.Fanout.Supervisor for the application's instance; see
  # GuildKit.Fanout.child_spec/1):
  #
  #     instance (one_for_one)
  #     ├── {GuildKit.Fanout.Partition, 0}    a partitioner and its workers
  #     ├── ...
  #     └── :senders (one_for_one)
  #         └── {GuildKit.Fanout.Sender, 0}, ...
  #
  # Partitions start before the senders, which send to them. The runtime callers read
  # is published in init/1, before any child starts.
  @moduledoc false

  use Supervisor

  alias GuildKit.Fanout.{Partition, Runtime, Sender}

  @doc "Starts the instance `opts` describes (options checked by Runtime.options!/2)."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts),
    do:
      Supervisor.start_link(__MODULE__, opts,
        name: Runtime.supervisor_name(Keyword.fetch!(opts, :name))
      )

  @impl Supervisor
  def init(opts) do
    runtime = Runtime.publish!(opts)

    partitions =
      for index <- 0..(tuple_size(runtime.partitioners) - 1) do
        Supervisor.child_spec({Partition, {runtime, index}}, id: {Partition, index})
      end

    sender_count = tuple_size(runtime.senders)

    senders =
      for index <- 0..(sender_count - 1) do
        Runtime.server_spec(Sender, runtime, runtime.senders, index)
      end

    senders = %{
      id: :senders,
      type: :supervisor,
      start:
        {Supervisor, :start_link,
         [senders, [strategy: :one_for_one] ++ Runtime.intensity(sender_count)]}
    }

    children = partitions ++ [senders]
    Supervisor.init(children, [strategy: :one_for_one] ++ Runtime.intensity(length(children)))
  end
end

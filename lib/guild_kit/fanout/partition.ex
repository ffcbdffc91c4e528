defmodule GuildKit.Fanout.Partition do
  # One partitioner and its workers:
  #
  #     {GuildKit.Fanout.Partition, i} (rest_for_one)
  #     ├── GuildKit.Fanout.Partitioner      registered as <instance>.Partitioner.<i>
  #     └── :workers (one_for_one)
  #         └── {GuildKit.Fanout.Worker, 0}, ...
  #
  # rest_for_one is what keeps per-receiver order when a partitioner dies: its
  # supervisor first terminates the workers (and waits until each is dead), and only
  # then starts the new partitioner and new workers, so no worker of the dead
  # partitioner can still be sending while the new ones deliver newer messages. When a
  # worker dies, only it is restarted, and the partitioner replays what it had not
  # served (see GuildKit.Fanout.Partitioner); when the workers' supervisor gives up,
  # only the workers are restarted, and the partitioner replays for each.
  @moduledoc false

  use Supervisor

  alias GuildKit.Fanout.{Partitioner, Runtime, Worker}

  @spec start_link({Runtime.t(), non_neg_integer()}) :: Supervisor.on_start()
  def start_link(arg), do: Supervisor.start_link(__MODULE__, arg)

  @impl Supervisor
  def init({runtime, index}) do
    partitioner = elem(runtime.partitioners, index)

    workers =
      for worker <- 0..(runtime.workers - 1) do
        Supervisor.child_spec({Worker, {partitioner, worker}}, id: {Worker, worker})
      end

    children = [
      # The partition's one partitioner is known by its module.
      Supervisor.child_spec(
        Runtime.server_spec(Partitioner, runtime, runtime.partitioners, index),
        id: Partitioner
      ),
      %{
        id: :workers,
        type: :supervisor,
        start:
          {Supervisor, :start_link,
           [workers, [strategy: :one_for_one] ++ Runtime.intensity(runtime.workers)]}
      }
    ]

    Supervisor.init(children, [strategy: :rest_for_one] ++ Runtime.intensity(length(children)))
  end
end

defmodule GuildKit.Fanout do
  @moduledoc """
  Sends one message to many processes, local or on other nodes, without blocking the
  caller for the whole fan-out and crossing the network once per node, not once per
  receiver.

  A guild publishing an event to 100,000 sessions with a `send/2` loop is blocked for
  the whole loop and sends 100,000 messages over distribution. `send/3` instead splits
  the receivers in one NIF call and hands them over in a single message:

      iex> me = self()
      iex> GuildKit.Fanout.send([me, nil, me], :hello)
      :ok
      iex> for _ <- 1..2, do: (receive do: (:hello -> :got))
      [:got, :got]

  The design follows Discord's Manifold, minus its gaps: configuration is read at run
  time, unknown options raise `ArgumentError`, no message is lost when a worker dies,
  and an unreachable node never blocks anybody.

  ## How a message travels

  Every node running the `:guild_kit` application runs senders, partitioners, and
  workers (see "Configuration"):

      caller ──> Sender ──> Partitioner (on each receiver's node) ──> Worker ──> receiver

    1. The caller splits the receivers (`GuildKit.Native`, one list walk in Rust, in
       slices on its own scheduler): pids of this node go into worker buckets,
       `rem(:erlang.phash2(pid), workers)`; pids of other nodes are set aside. The NIF
       sends the split to the caller's sender, always the same one,
       `rem(:erlang.phash2(caller), senders)`, moving it rather than copying it. With
       `offload: true` the caller only checks the list and sends it as is, and the
       sender splits it.
    2. The sender hands the buckets to its partitioner on this node, groups the other
       receivers by node, and sends each node one message, to the partitioner with
       the same index there (`GuildKit.Fanout.Sender`).
    3. A partitioner gives each worker its bucket (splitting first when the receivers
       came from another node) and keeps it until the worker is done
       (`GuildKit.Fanout.Partitioner`).
    4. A worker sends the message to each receiver of its bucket
       (`GuildKit.Fanout.Worker`).

  ## Guarantees

    * **Order.** For one calling process, every receiver gets the messages in the
      order they were sent, in every mode **and across modes**: default, `pack:` and
      `offload:` messages from one caller to one receiver all travel the same chain of
      processes (the caller's sender, that sender's partitioner on the receiver's
      node, the receiver's worker), and Erlang keeps the messages between two
      processes in order. Packing changes only the payload; offloading only moves the
      split from the caller to the sender, the first hop of every mode. (The NIF's
      `enif_send` of a default-mode split is queued as a signal from the calling
      process like its own `send/2` of an offloaded list, so the two keep their order
      too; the mixed-mode tests check it.) Messages of different callers may
      interleave, as with `send/2`.
    * **Exactly once** per listing: a pid listed twice gets the message twice, `nil`s
      are skipped.
    * **A dying worker loses nothing.** Its partitioner restarts it and replays what it
      had not delivered, in order, before anything newer (see
      `GuildKit.Fanout.Partitioner`). A worker killed in the middle of a batch may
      deliver one message twice to one receiver, the one it was serving when killed;
      a worker killed between batches causes no duplicate.
    * **Unreachable nodes never block.** The caller never sends across the network.
      Senders send with `:noconnect` and `:nosuspend`: receivers on a node that is not
      connected are dropped and counted (`stats/0`), and a slow node's messages wait
      in a queue of their own while every other node is served (see
      `GuildKit.Fanout.Sender`). Messages already on their way when a connection
      breaks are lost, as with `send/2`, and are not counted.

  A sender or partitioner that is killed loses the messages it held. Neither has a
  code path that can fail on a caller's input: receivers are checked by the caller.

  ## Configuration

  Read when the application starts, from `config :guild_kit, GuildKit.Fanout, ...`:

    * `:senders` - sender processes on this node (default: one per scheduler);
    * `:partitioners` - partitioner processes on this node (default `1`); it must be
      the same on every node, since a sender addresses partitioner `i` by name;
    * `:workers` - workers per partitioner (default: one per scheduler), at most 65,536.

  ## Performance

  The caller's cost is one list walk in Rust, about 10 ns per local receiver, in
  slices of 8,192 receivers on its own scheduler (no NIF call holds it for more than
  about 0.1 ms, and it yields after about 0.4 ms of them); the split then moves to the
  sender without a copy. A remote pid costs more, since it must be copied once. With
  `offload: true` the caller only checks the list, about 2 ns per receiver, and
  `send/2` copies it to the sender.

  Measured on 2 cores at 100,000 receivers, idle: the caller is blocked about 1 ms
  (0.6 ms with `offload: true`) when they are local, 1.8-2.1 ms when they are on two
  other nodes; delivery to all of them took 0.8-0.9 times as long as a `send/2` loop
  locally and 3.0-3.4 times less across the two nodes. See `bench/RESULTS.md`.
  """

  import Kernel, except: [send: 2]

  alias GuildKit.Fanout.Runtime
  alias GuildKit.Native

  # How long a caller waits for its sender to be restarted before dropping a message.
  @sender_wait_ms 50

  @typedoc "A receiver: a pid, or `nil`, which is skipped."
  @type receiver :: pid() | nil

  @typedoc false
  @type payload :: {:term, term()} | {:packed, binary()}

  @typedoc false
  @type split ::
          {buckets :: tuple(), counts :: tuple(), non_neg_integer(), [pid()], non_neg_integer()}

  @doc """
  Sends `message` to every receiver and returns `:ok`.

  `receivers` is a pid, `nil`, or a list of pids and `nil`s, on any nodes. `nil`s are
  skipped; a pid listed twice gets the message twice.

  ## Options

    * `:pack` - `:binary` encodes the message once with `:erlang.term_to_binary/1` and
      each worker decodes it once per batch, so a large message is not copied through
      every hop; `false` (default) sends the term as is.
    * `:offload` - `true` returns as soon as the receiver list is checked and handed to
      a sender process, which splits and sends it; `false` (default) splits in the
      caller.

  Raises `ArgumentError` for an unknown option, a bad option value, or a receiver that
  is not a pid or `nil`; nothing is sent then.

  ## Examples

      iex> GuildKit.Fanout.send(self(), {:event, 1})
      :ok
      iex> GuildKit.Fanout.send([self()], {:event, 2}, pack: :binary)
      :ok
      iex> GuildKit.Fanout.send([nil, self()], {:event, 3}, offload: true)
      :ok
      iex> for _ <- 1..3, do: receive(do: ({:event, n} -> n))
      [1, 2, 3]
      iex> GuildKit.Fanout.send(nil, :nobody)
      :ok

  Bad options and receivers raise:

      iex> GuildKit.Fanout.send([self()], :hi, mode: :fast)
      ** (ArgumentError) unknown keys [:mode] in [mode: :fast], the allowed keys are: [:pack, :offload]

      iex> GuildKit.Fanout.send([self(), :session], :hi)
      ** (ArgumentError) expected receivers to be pids or nil, got: :session at position 1

  ## Performance

  O(n) in the caller for n receivers: a Rust list walk of about 10 ns per local
  receiver in slices on the caller's scheduler, or with `offload: true` a check of
  about 2 ns per receiver plus the copy of the list into the sender's mailbox. About
  1 ms (0.6 ms with `offload: true`) for 100,000 local receivers. Delivery then takes
  O(n) in the workers, spread over them.
  """
  @spec send(receiver() | [receiver()], term(), keyword()) :: :ok
  def send(receivers, message, opts \\ []) do
    {pack, offload} = options!(opts)
    receivers = receivers!(receivers)
    runtime = Runtime.get()

    cond do
      receivers == [] ->
        :ok

      offload ->
        check!(receivers, receivers, 0)
        offload(sender(runtime, @sender_wait_ms), receivers, message, pack)

      true ->
        split_send(runtime, receivers, pack(message, pack), @sender_wait_ms)
    end

    Runtime.count(Runtime.counters(), :sent, 1)
    :ok
  end

  @doc """
  Returns this node's fan-out counters since the application first started:

    * `:sent` - calls to `send/3` on this node;
    * `:delivered_to_workers` - receivers on this node handed to a worker, from
      callers on any node (a replay after a worker crash is not counted again);
    * `:dropped` - receivers that senders on this node dropped because their node was
      not connected or went down while their message waited;
    * `:worker_restarts` - workers on this node restarted after dying.

  ## Examples

      iex> GuildKit.Fanout.stats() |> Map.keys() |> Enum.sort()
      [:delivered_to_workers, :dropped, :sent, :worker_restarts]

  ## Performance

  O(1): reads four `:counters` entries.
  """
  @spec stats() :: %{
          sent: non_neg_integer(),
          delivered_to_workers: non_neg_integer(),
          dropped: non_neg_integer(),
          worker_restarts: non_neg_integer()
        }
  def stats, do: Runtime.read_counters()

  @doc false
  # The split of `receivers` for `workers` buckets, on a dirty scheduler when long.
  @spec split([receiver()], pos_integer()) :: split() | {:guild_kit_bad_receiver, integer()}
  def split(receivers, workers) do
    Native.fanout_split(receivers, workers)
  end

  @doc false
  # Groups pids by node: [{node, pids}], each group in no particular order.
  #
  # The NIF cannot see the node of a remote pid, so this runs in Elixir, in one pass
  # that keeps up to four nodes and their lists in arguments (about 7 ns a pid, against
  # about 40 ns for a map of accumulators, measured at 66k pids on 2 nodes). Pids of a
  # fifth and further nodes are set aside and grouped with a map, so any number of
  # nodes costs O(n).
  @spec group_by_node([pid()]) :: [{node(), [pid()]}]
  def group_by_node(pids), do: slots(pids, nil, [], nil, [], nil, [], nil, [], [])

  defp slots([pid | rest], n1, p1, n2, p2, n3, p3, n4, p4, others) do
    case node(pid) do
      ^n1 -> slots(rest, n1, [pid | p1], n2, p2, n3, p3, n4, p4, others)
      ^n2 -> slots(rest, n1, p1, n2, [pid | p2], n3, p3, n4, p4, others)
      ^n3 -> slots(rest, n1, p1, n2, p2, n3, [pid | p3], n4, p4, others)
      ^n4 -> slots(rest, n1, p1, n2, p2, n3, p3, n4, [pid | p4], others)
      node when n1 == nil -> slots(rest, node, [pid], n2, p2, n3, p3, n4, p4, others)
      node when n2 == nil -> slots(rest, n1, p1, node, [pid], n3, p3, n4, p4, others)
      node when n3 == nil -> slots(rest, n1, p1, n2, p2, node, [pid], n4, p4, others)
      node when n4 == nil -> slots(rest, n1, p1, n2, p2, n3, p3, node, [pid], others)
      _fifth -> slots(rest, n1, p1, n2, p2, n3, p3, n4, p4, [pid | others])
    end
  end

  defp slots([], n1, p1, n2, p2, n3, p3, n4, p4, others) do
    kept =
      for {node, pids} <- [{n1, p1}, {n2, p2}, {n3, p3}, {n4, p4}], node != nil, do: {node, pids}

    kept ++ group_with_map(others, %{})
  end

  defp group_with_map([pid | rest], groups) do
    node = node(pid)

    case groups do
      %{^node => pids} -> group_with_map(rest, %{groups | node => [pid | pids]})
      _ -> group_with_map(rest, Map.put(groups, node, [pid]))
    end
  end

  defp group_with_map([], groups), do: Map.to_list(groups)

  @doc false
  @spec pack(term(), boolean()) :: payload()
  def pack(message, true), do: {:packed, :erlang.term_to_binary(message)}
  def pack(message, false), do: {:term, message}

  @doc false
  @spec unpack(payload()) :: term()
  def unpack({:term, message}), do: message
  def unpack({:packed, binary}), do: :erlang.binary_to_term(binary)

  defp options!(opts) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected options to be a keyword list, got: #{inspect(opts)}"
    end

    # Also refuses a key given twice, so no value can hide behind another.
    opts = Keyword.validate!(opts, pack: false, offload: false)

    pack =
      case opts[:pack] do
        :binary ->
          true

        off when off in [false, nil] ->
          false

        other ->
          raise ArgumentError, "expected :pack to be :binary or false, got: #{inspect(other)}"
      end

    case opts[:offload] do
      offload when is_boolean(offload) -> {pack, offload}
      other -> raise ArgumentError, "expected :offload to be a boolean, got: #{inspect(other)}"
    end
  end

  defp options!(opts) do
    raise ArgumentError, "expected options to be a keyword list, got: #{inspect(opts)}"
  end

  defp receivers!(receivers) when is_list(receivers), do: receivers
  defp receivers!(receiver) when is_pid(receiver), do: [receiver]
  defp receivers!(nil), do: []

  defp receivers!(other) do
    raise ArgumentError,
          "expected receivers to be a pid, nil or a list of pids and nils, got: #{inspect(other)}"
  end

  # Checks `rest`, the part of `receivers` from `position` on, in bounded NIF calls.
  defp check!(receivers, rest, position) do
    case Native.fanout_check(rest, position) do
      :ok -> :ok
      {:guild_kit_more, rest, position} -> check!(receivers, rest, position)
      {:guild_kit_bad_receiver, position} -> raise_bad_receiver(receivers, position)
    end
  end

  defp raise_bad_receiver(receivers, position) do
    raise ArgumentError,
          "expected receivers to be pids or nil, got: #{inspect(Enum.at(receivers, position))} " <>
            "at position #{position}"
  end

  defp offload(nil, receivers, _message, _pack), do: drop(receivers)

  defp offload(sender, receivers, message, pack),
    do: Kernel.send(sender, {:guild_kit_fanout_offload, receivers, message, pack})

  # Splits in the NIF, which sends the split to the sender without copying it.
  defp split_send(runtime, receivers, payload, wait_ms) do
    case sender(runtime, wait_ms) do
      nil ->
        check!(receivers, receivers, 0)
        drop(receivers)

      sender ->
        case native_split_send(receivers, runtime.workers, sender, payload) do
          {:guild_kit_bad_receiver, position} -> raise_bad_receiver(receivers, position)
          {_local_count, _remote_count} -> :ok
          # It died after the lookup: wait for its successor, as above.
          :guild_kit_unsent -> split_send(runtime, receivers, payload, wait_ms)
        end
    end
  end

  # The split runs in slices of a few thousand receivers on the caller's own scheduler
  # (see native/guild_kit_nif/src/fanout.rs for why not on a dirty one); the last
  # slice sends it.
  defp native_split_send(receivers, workers, sender, payload) do
    receivers
    |> Native.fanout_split_send(workers, sender, payload)
    |> more_slices(sender, payload)
  end

  defp more_slices({:guild_kit_more, rest, progress}, sender, payload) do
    rest
    |> Native.fanout_split_send_more(progress, sender, payload)
    |> more_slices(sender, payload)
  end

  defp more_slices(result, _sender, _payload), do: result

  # The caller's sender, always the same one for a given caller, so that all its
  # messages go through one mailbox in order.
  defp sender(runtime, wait_ms) do
    senders = runtime.senders
    name = elem(senders, :erlang.phash2(self(), tuple_size(senders)))

    case Process.whereis(name) do
      nil when wait_ms > 0 ->
        # Being restarted by its supervisor, which takes microseconds; only a
        # component that is shutting down keeps it away for long.
        Process.sleep(1)
        sender(runtime, wait_ms - 1)

      pid_or_nil ->
        pid_or_nil
    end
  end

  defp drop(receivers) do
    Runtime.count(Runtime.counters(), :dropped, Enum.count(receivers, &is_pid/1))
  end
end

defmodule GuildKit.Fanout do
  # How long a caller waits for a partitioner or sender that its supervisor is
  # restarting before dropping what it would have handed over.
  @restart_wait_ms 50

  # Up to this many receivers and this many words of message, `send/3` hands them over
  # without a NIF call (see "How a message travels"): a bounded copy into two mailboxes.
  @few_receivers 32
  @small_words 256

  @moduledoc """
  Sends one message to many processes, local or on other nodes, without blocking the
  caller for the whole fan-out and crossing the network once per node, not once per
  receiver.

  A guild publishing an event to 100,000 sessions with a `send/2` loop is blocked for
  the whole loop and sends 100,000 messages over distribution. `send/3` instead splits
  the receivers in one NIF walk and hands them to worker processes in a few messages:

      iex> me = self()
      iex> GuildKit.Fanout.send([me, nil, me], :hello)
      :ok
      iex> for _ <- 1..2, do: (receive do: (:hello -> :got))
      [:got, :got]

  The design follows Discord's Manifold (see "Coming from Manifold"), minus its gaps:
  options are given at start or read at run time, unknown options raise
  `ArgumentError`, no message is lost when a worker dies, and an unreachable node never
  blocks anybody.

  ## Starting it

  The `:guild_kit` application starts an instance named `GuildKit.Fanout`, configured
  with the same options as `start_link/1` (read when the application starts):

      config :guild_kit, GuildKit.Fanout, senders: 4, partitioners: 1, workers: 8

  To run fan-out in your own supervision tree instead, as with `Phoenix.PubSub`, turn
  the application's instance off and start one (or several) under a name of yours:

      config :guild_kit, start_fanout: false

      children = [
        {GuildKit.Fanout, name: MyApp.Fanout, workers: 8},
        ...
      ]

  and pass that name to every call: `GuildKit.Fanout.send(pids, msg, name:
  MyApp.Fanout)`. An instance reaches receivers on another node through the instance
  of the same name there, which must have the same `:partitioners` count.

  ## How a message travels

      caller ──> Partitioner (this node) ──> Worker ──> receivers of this node
        └──────> Sender ──> Partitioner (each other node) ──> Worker ──> receivers there

    1. The caller walks the receivers once in a NIF, in slices on its own scheduler:
       pids of this node go into worker batches, `rem(:erlang.phash2(pid), workers)`,
       native lists that move between processes as a resource term of a few words;
       pids of other nodes are set aside. The message is copied once, into native
       memory (on a dirty scheduler when it is big). With `offload: true` the caller
       skips the hashing and hands one batch over. A call with at most 32 receivers
       and a message of at most 256 words (binaries counted by their bytes), not
       offloaded, skips the NIFs: it sends the pids of this node to its partitioner
       as a list, as other nodes' senders do, and the other pids to its sender, each
       with the message. Such a call has nothing to walk, and NIF calls are most of
       its cost when caches are cold, as they are for a guild sending an event every
       few milliseconds to its relays.
    2. The caller sends the batches to its partitioner on this node and the other
       nodes' pids to its sender. Both are chosen by the caller's partitioner key
       (its pid, unless it set one: `set_partitioner_key/1`).
    3. The sender groups the other pids by node, in chunks of a few thousand, and
       sends each node, per chunk, one message to the partitioner of the same index
       there.
    4. A partitioner gives each worker its batch (splitting first when it got one
       batch or a list from another node) and keeps it until the worker has served it.
    5. A worker sends each receiver of its batch a copy of the message, as `send/2`
       would.

  Each partitioner runs in a supervisor of its own with its workers (`rest_for_one`,
  the partitioner first), and the senders in another, all under the instance's
  supervisor, registered as `<name>.Supervisor`; `:supervisor.which_children/1` and
  observer show the whole tree.

  No copy between these processes grows with the number of receivers or with the
  size of the message (beyond the bounded lists and messages of those small calls): batches and the message travel as resource terms, chunks of
  remote receivers are bounded, and a big message crosses to another node packed, in
  parts of a bounded size. Every NIF call on a normal scheduler does a bounded amount
  of work (a walk of at most 8,192 receivers, or at most 0.2 ms of sends, a budget the
  call checks itself) and reports it to the scheduler; copies of big messages run on
  dirty schedulers.

  ## Guarantees

    * **Order.** Messages sent under one partitioner key reach each receiver in the
      order they were sent, in every mode **and across modes**: all messages of one
      key to one receiver travel the same chain of processes (the key's partitioner
      on the receiver's node, or the key's sender and then that partitioner; then the
      receiver's worker), and Erlang keeps the messages between two processes in
      order. The key is the calling process unless it set one, so by default this is
      the order of one caller's sends; messages of different keys may interleave, as
      with `send/2` from different processes.
    * **Order across processes that share a key.** Processes on one node that send
      under the same key (`set_partitioner_key/1` or `key:`), such as an old and a
      new guild process, keep per-receiver order for every message sent after the
      earlier sender's `send/3` has returned. Processes on different nodes go through
      different senders and links, so they are not ordered with each other.
    * **Order when fan-out processes die.** A dead worker's replacement replays what
      it had not served before anything newer. When a partitioner dies, its
      supervisor terminates its workers, and waits until each is dead, before the new
      partitioner and workers start, so nothing old is delivered after anything new.
      A killed sender loses what it held; its successor's messages follow the ones it
      had already sent to each node, on that node's single link.
    * **Exactly once** per listing: a pid listed twice gets the message twice, `nil`s
      are skipped. **A dying worker loses nothing and duplicates nothing**: a batch
      counts the receivers served (a process is never killed in the middle of a NIF
      call), so its replacement resumes exactly there.
    * **Losses.** A partitioner that dies loses what it and its workers had not
      delivered; a sender that dies loses what it had not sent on. Receivers on a node
      that is not connected are dropped and counted (`stats/1`); messages already on
      their way when a connection breaks are lost, as with `send/2`.
    * **Unreachable nodes never block.** The caller never sends across the network.
      Senders send with `:noconnect` and `:nosuspend`: receivers on a node that is not
      connected are dropped at once and counted, no connection is attempted, and a
      slow node's messages wait in a queue of their own (retried every few ms, in
      order) while every other node is served.
    * **A stopped instance says so at once.** `send/3` raises `ArgumentError` when
      the instance is not running (the application stopped, or never started it, or
      its supervisor is down), without sending anything (within #{@restart_wait_ms} ms when
      the supervisor has just died and its processes still hold their names: it may be
      restarting); while the instance is up and one of its processes is being restarted,
      `send/3` waits for it up to #{@restart_wait_ms} ms, then drops the receivers it would
      have served and counts them.
    * **Crashes stay contained.** Every supervisor of an instance lets each of its
      children die 100 times a second, all at once, before it gives up (and escalates):
      bursts of crashes or kills under load never take the application down.

  With receivers whose mailbox is `message_queue_data: :off_heap`, Erlang may deliver
  messages of different senders out of causal order; order across a worker restart
  then holds only up to that.

  ## Coming from Manifold

  | Manifold | GuildKit.Fanout |
  |---|---|
  | `Manifold.send(pids, msg)` | `send(pids, msg)` |
  | `pack_mode: :binary` | `pack: :binary` (the message crosses to other nodes packed once, unpacked once per node) |
  | `send_mode: :offload` | `offload: true` (the caller checks the receivers and hands them over; the partitioner splits them) |
  | `Manifold.set_partitioner_key(key)` | `set_partitioner_key(key)`, or `key: key` per call |
  | `Manifold.valid_send_options?(opts)` | none: `send/3` raises `ArgumentError` for a bad option, before sending anything |
  | compile-time `config :manifold, :partitioners, n` | `:partitioners`, `:senders` and `:workers` at start, per instance |
  | a receiver that is not a pid crashes a fan-out process | `ArgumentError` in the caller, nothing sent |
  | a restarted worker loses its batch | replayed, exactly once |

  ## Performance

  The caller's cost is one list walk in Rust, O(n) for n receivers: a list cell, a type
  check, a hash and a push per local receiver (no hash with `offload: true`), and a copy
  of each pid of another node. Delivery then costs O(n) in the workers, spread over
  them, one copy of the message per receiver. Timings are in `bench/RESULTS.md`.

  Local receivers are held natively, 8 bytes each, in chunks of 4,096. Up to 64 chunks
  of finished fan-outs (2 MiB, counted in `GuildKit.native_memory/0`) are kept for the
  next ones, so that a fan-out writes to memory the kernel has already paged in.
  """

  import Kernel, except: [send: 2]

  alias GuildKit.Fanout.{Partitioner, Runtime, Sender, Split, Supervisor}
  alias GuildKit.Native

  @key_key {__MODULE__, :partitioner_key}

  @typedoc "A receiver: a pid, or `nil`, which is skipped."
  @type receiver :: pid() | nil

  @typedoc """
  An option of `start_link/1` (and of `config :guild_kit, GuildKit.Fanout`):

    * `:name` - the instance's name, an atom (default `GuildKit.Fanout`, the
      application's instance); its supervisor is registered as `<name>.Supervisor`,
      its partitioners as `<name>.Partitioner.0`, ... and its senders as
      `<name>.Sender.0`, ...;
    * `:senders` - sender processes (default: one per scheduler), at most 1,024;
    * `:partitioners` - partitioners, each with its workers (default `1`), at most
      1,024; it must be the same on every node, since partitioner `i` is addressed by
      name across nodes;
    * `:workers` - workers per partitioner (default: one per scheduler), at most 65,536.
  """
  @type start_option ::
          {:name, atom()}
          | {:senders, pos_integer()}
          | {:partitioners, pos_integer()}
          | {:workers, pos_integer()}

  @doc """
  A child spec that starts an instance with `opts` (see `t:start_option/0`), for a
  supervision tree: `{GuildKit.Fanout, name: MyApp.Fanout}`. Its id is the name.

  Raises `ArgumentError` for an unknown option or a bad value.

  ## Examples

      iex> spec = GuildKit.Fanout.child_spec(name: MyApp.Fanout, workers: 4)
      iex> {spec.id, spec.type}
      {MyApp.Fanout, :supervisor}

      iex> GuildKit.Fanout.child_spec(workers: 0)
      ** (ArgumentError) expected :workers to be an integer in 1..65536, got: 0

  ## Performance

  O(1).
  """
  @spec child_spec([start_option()]) :: Elixir.Supervisor.child_spec()
  def child_spec(opts) do
    opts = Runtime.options!(opts)

    %{
      id: opts[:name],
      start: {Supervisor, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc """
  Starts an instance with `opts` (see `t:start_option/0`) and links it to the caller.
  Usually started through `child_spec/1` in a supervision tree.

  Raises `ArgumentError` for an unknown option or a bad value.

  ## Examples

      iex> {:ok, pid} = GuildKit.Fanout.start_link(name: DocFanout, senders: 1, workers: 1)
      iex> GuildKit.Fanout.send(self(), :hi, name: DocFanout)
      :ok
      iex> receive do: (:hi -> :got)
      :got
      iex> Supervisor.stop(pid)
      :ok

  ## Performance

  O(senders + partitioners × workers) processes are started.
  """
  @spec start_link([start_option()]) :: Elixir.Supervisor.on_start()
  def start_link(opts), do: Supervisor.start_link(Runtime.options!(opts))

  @doc """
  Sends `message` to every receiver and returns `:ok`.

  `receivers` is a pid, `nil`, or a list of pids and `nil`s, on any nodes. `nil`s are
  skipped; a pid listed twice gets the message twice. See "Guarantees" in the module
  docs for order and losses.

  ## Options

    * `:pack` - `:binary` sends the message to other nodes encoded once with
      `:erlang.term_to_binary/1` and decoded once per node, rather than as a term
      encoded by distribution for each node; `false` (default; `nil`, Manifold's
      default, means the same) sends it as a term (big messages travel packed anyway). Receivers get the message itself either way.
    * `:offload` - `true` returns as soon as the receivers are checked and handed
      over: the caller does not hash them, the partitioner splits them among its
      workers; `false` (default) splits them in the caller.
    * `:key` - the partitioner key of this call (see `set_partitioner_key/1`); by
      default the key the calling process set, or its pid.
    * `:name` - the instance to send through (default `GuildKit.Fanout`).

  Raises `ArgumentError` for an unknown option, a bad option value, a receiver that is
  not a pid or `nil` (nothing is sent then), or an instance that is not running.

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
      ** (ArgumentError) unknown keys [:mode] in [mode: :fast], the allowed keys are: [:pack, :offload, :key, :name]

      iex> GuildKit.Fanout.send([self(), :session], :hi)
      ** (ArgumentError) expected receivers to be pids or nil, got: :session at position 1

  ## Performance

  O(n) in the caller for n receivers (one NIF walk, in slices on its own scheduler),
  plus one copy of the message, on a dirty scheduler when it is big; up to 32
  receivers and a message of up to 256 words, two sends and no NIF. Delivery then
  costs O(n) in the workers, spread over them.
  """
  @spec send(receiver() | [receiver()], term(), keyword()) :: :ok
  def send(receivers, message, opts \\ []) do
    {name, pack, offload, key} = options!(opts)
    runtime = Runtime.fetch!(name)
    receivers = receivers!(receivers)

    if not offload and few?(receivers, @few_receivers) and small?(message) do
      send_few(runtime, receivers, message, key, pack)
    else
      send_many(runtime, receivers, message, key, pack, offload)
    end

    Runtime.count(runtime, :sent, 1)
    :ok
  end

  defp send_many(runtime, receivers, message, key, pack, offload) do
    workers = if offload, do: 1, else: runtime.workers

    case Split.split(receivers, workers) do
      {:ok, [], nil} ->
        running!(runtime)

      {:ok, batches, remote} ->
        message = Native.fanout_message(message)
        {partitioner, sender} = chain(runtime, key)

        if batches != [] do
          count = Enum.reduce(batches, 0, fn {_, _, count}, sum -> sum + count end)

          hand_over(
            runtime,
            partitioner,
            count,
            &Partitioner.deliver(&1, workers, batches, message)
          )
        end

        if remote != nil do
          hand_over(runtime, sender, Split.count(remote), fn pid ->
            Sender.forward(pid, remote, message, partitioner, pack)
          end)
        end

      {:bad_receiver, position} ->
        bad_receiver!(receivers, position)
    end
  end

  # A few receivers and a small message: no NIF in the caller. The partitioner gets the
  # pids of this node as a list, as it does from other nodes' senders, and splits them
  # into the same buckets; the sender gets the other nodes' pids grouped. Both are the
  # processes a longer list would go through, so per-receiver order holds across the
  # two paths.
  defp send_few(runtime, receivers, message, key, pack) do
    case group_few(receivers, 0, [], []) do
      {:bad_receiver, position} ->
        bad_receiver!(receivers, position)

      {[], []} ->
        running!(runtime)

      {here, there} ->
        {partitioner, sender} = chain(runtime, key)

        if here != [] do
          hand_over(
            runtime,
            partitioner,
            length(here),
            &Partitioner.deliver_list(&1, here, message)
          )
        end

        if there != [] do
          hand_over(runtime, sender, length(there), fn pid ->
            Sender.forward_list(pid, there, message, partitioner, pack)
          end)
        end
    end
  end

  defp group_few([], _position, here, there), do: {here, there}

  defp group_few([nil | rest], position, here, there),
    do: group_few(rest, position + 1, here, there)

  defp group_few([pid | rest], position, here, there) when is_pid(pid) do
    if node(pid) == node(),
      do: group_few(rest, position + 1, [pid | here], there),
      else: group_few(rest, position + 1, here, [pid | there])
  end

  defp group_few([_other | _rest], position, _here, _there), do: {:bad_receiver, position}

  defp bad_receiver!(receivers, position) do
    raise ArgumentError,
          "expected receivers to be pids or nil, got: " <>
            "#{GuildKit.Describe.describe(Enum.at(receivers, position))} at position #{position}"
  end

  # Whether `list` is a proper list of at most `max` elements, looking at no more.
  defp few?([], _max), do: true
  defp few?([_ | rest], max) when max > 0, do: few?(rest, max - 1)
  defp few?(_, _max), do: false

  # Whether `message` takes at most @small_words words, binaries counted by their
  # bytes, looking at no more than that. Anything else (bignums, funs) is not small.
  defp small?(message), do: words_left([message], @small_words) >= 0

  defp words_left(_terms, budget) when budget < 0, do: budget
  defp words_left([], budget), do: budget

  # A tuple or map is measured by its size before its elements are listed.
  defp words_left([term | rest], budget) when is_tuple(term) do
    budget = budget - 1 - tuple_size(term)
    if budget < 0, do: budget, else: words_left(Tuple.to_list(term) ++ rest, budget)
  end

  defp words_left([[] | rest], budget), do: words_left(rest, budget)
  defp words_left([[head | tail] | rest], budget), do: words_left([head, tail | rest], budget - 2)

  defp words_left([term | rest], budget) when is_map(term) do
    budget = budget - 3 - 2 * map_size(term)

    if budget < 0,
      do: budget,
      else: words_left(:maps.keys(term) ++ :maps.values(term) ++ rest, budget)
  end

  defp words_left([term | rest], budget) when is_bitstring(term),
    do: words_left(rest, budget - 3 - div(byte_size(term), 8))

  defp words_left([term | rest], budget)
       when is_integer(term) and term >= -0x800000000000000 and term < 0x800000000000000,
       do: words_left(rest, budget - 1)

  defp words_left([term | rest], budget) when is_atom(term) or is_float(term),
    do: words_left(rest, budget - 3)

  defp words_left([term | rest], budget) when is_pid(term) or is_reference(term) or is_port(term),
    do: words_left(rest, budget - 6)

  defp words_left(_terms, _budget), do: -1

  @doc """
  Sets the partitioner key of the calling process, which selects the chain of fan-out
  processes its messages take (its partitioner on each node and its sender): messages
  sent under one key keep per-receiver order whichever process of this node sends
  them, once the earlier sender's `send/3` has returned. A guild can use its id, so
  that the process taking it over continues its order. `nil` resets the key to the
  calling process. The `:key` option of `send/3` overrides it for one call.

  ## Examples

      iex> GuildKit.Fanout.set_partitioner_key({:guild, 42})
      :ok
      iex> GuildKit.Fanout.send(self(), :under_the_guild_key)
      :ok
      iex> receive do: (:under_the_guild_key -> :got)
      :got
      iex> GuildKit.Fanout.set_partitioner_key(nil)
      :ok

  ## Performance

  O(1): a process dictionary entry.
  """
  @spec set_partitioner_key(term()) :: :ok
  def set_partitioner_key(nil) do
    Process.delete(@key_key)
    :ok
  end

  def set_partitioner_key(key) do
    Process.put(@key_key, key)
    :ok
  end

  @doc """
  Returns the fan-out counters of instance `name` on this node since it first started:

    * `:sent` - calls to `send/3` on this node;
    * `:delivered_to_workers` - receivers on this node handed to a worker, from
      callers on any node (a replay after a worker crash is not counted again);
    * `:dropped` - receivers dropped on this node: their node was not connected or
      went down while their message waited, their pid was of an earlier run of the
      node, or the partitioner or sender to take them was being restarted too long;
    * `:worker_restarts` - workers on this node restarted after dying.

  Raises `ArgumentError` when no instance of that name ever started on this node.

  ## Examples

      iex> GuildKit.Fanout.stats() |> Map.keys() |> Enum.sort()
      [:delivered_to_workers, :dropped, :sent, :worker_restarts]

  ## Performance

  O(1): reads four `:counters` entries.
  """
  @spec stats(atom()) :: %{
          sent: non_neg_integer(),
          delivered_to_workers: non_neg_integer(),
          dropped: non_neg_integer(),
          worker_restarts: non_neg_integer()
        }
  def stats(name \\ __MODULE__), do: name |> Runtime.fetch!() |> Runtime.read_counters()

  defp options!([]), do: {__MODULE__, false, false, nil}

  defp options!(opts) when is_list(opts) do
    # Also refuses a key given twice, so no value can hide behind another.
    opts =
      GuildKit.Describe.options!(opts,
        pack: false,
        offload: false,
        key: nil,
        name: __MODULE__
      )

    pack =
      case opts[:pack] do
        :binary ->
          true

        off when off in [false, nil] ->
          false

        other ->
          raise ArgumentError,
                "expected :pack to be :binary or false, got: #{GuildKit.Describe.describe(other)}"
      end

    unless is_boolean(opts[:offload]) do
      raise ArgumentError,
            "expected :offload to be a boolean, got: #{GuildKit.Describe.describe(opts[:offload])}"
    end

    unless is_atom(opts[:name]) do
      raise ArgumentError,
            "expected :name to be an atom, got: #{GuildKit.Describe.describe(opts[:name])}"
    end

    {opts[:name], pack, opts[:offload], opts[:key]}
  end

  defp options!(opts) do
    raise ArgumentError,
          "expected options to be a keyword list, got: #{GuildKit.Describe.describe(opts)}"
  end

  defp receivers!(receivers) when is_list(receivers), do: receivers
  defp receivers!(receiver) when is_pid(receiver), do: [receiver]
  defp receivers!(nil), do: []

  defp receivers!(other) do
    raise ArgumentError,
          "expected receivers to be a pid, nil or a list of pids and nils, got: #{GuildKit.Describe.describe(other)}"
  end

  # The names of the partitioner (the same on every node) and of the sender that the
  # partitioner key selects: the caller's, unless it set one or passed `:key`.
  defp chain(runtime, key) do
    key = key || Process.get(@key_key) || self()

    {elem(runtime.partitioners, :erlang.phash2(key, tuple_size(runtime.partitioners))),
     elem(runtime.senders, :erlang.phash2(key, tuple_size(runtime.senders)))}
  end

  # Gives `count` receivers to the instance's process `name` with `deliver`, or counts
  # them dropped when it is not back from a restart in time.
  defp hand_over(runtime, name, count, deliver) do
    case child(runtime, name, @restart_wait_ms) do
      nil -> drop(runtime, count)
      pid -> deliver.(pid)
    end
  end

  # A send with nobody to reach still needs a running instance.
  defp running!(runtime) do
    unless Runtime.running?(runtime), do: raise(ArgumentError, Runtime.not_running(runtime.name))
  end

  # The pid of the instance's process `name`, waiting while its supervisor restarts it,
  # which takes microseconds; nil when that takes longer than `wait_ms`. Raises when
  # the instance itself is down: at once when nothing holds the name; after `wait_ms`
  # when something does, which is a moment after the instance's supervisor was killed
  # (its processes are still going, and the supervisor is being restarted) or a name
  # held by another process, where a send must not go.
  defp child(runtime, name, wait_ms) do
    case {Process.whereis(name), Runtime.running?(runtime)} do
      {pid, true} when is_pid(pid) ->
        pid

      {nil, false} ->
        raise ArgumentError, Runtime.not_running(runtime.name)

      _restarting when wait_ms > 0 ->
        Process.sleep(1)
        child(runtime, name, wait_ms - 1)

      {nil, true} ->
        nil

      {_pid, false} ->
        raise ArgumentError, Runtime.not_running(runtime.name)
    end
  end

  defp drop(runtime, count), do: Runtime.count(runtime, :dropped, count)
end

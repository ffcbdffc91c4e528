defmodule GuildKit.MemoryEstimator do
  @moduledoc """
  The memory a term takes, in microseconds even for a million entries, and the memory
  of a live process's state, measured inside the process without copying it out.

  `:erts_debug.flat_size/1` walks every word of a term on a normal scheduler, and
  `:sys.get_state/1` first copies the whole state to the caller. A guild state of a
  million members takes tens to hundreds of milliseconds either way. This module walks
  terms in Rust, samples large collections, and runs `process/2` inside the target.

      iex> estimate = GuildKit.MemoryEstimator.exact({:member, 42, "nick", [1, 2]})
      iex> {estimate.words, estimate.words == :erts_debug.flat_size({:member, 42, "nick", [1, 2]})}
      {12, true}

  Sizes are `GuildKit.MemoryEstimator.Estimate` structs: heap words as
  `:erts_debug.flat_size/1` counts them, bytes, and the off-heap binary bytes that
  `flat_size` leaves out.

  ## Sampling

  `estimate/2` sizes any collection larger than `:samples` (default 200) from a sample
  of its elements, each standing for the elements around it, and adds the
  collection's own words, which follow from its length:

    * tuples and lists: one random pick in each of `:samples` equal blocks
      (stratified, so periodic or sorted data does not bias it). A list is walked
      once, along its spine, without knowing its length in advance: its blocks double
      in length as needed, leaving between half of `:samples` and `:samples` picks;
    * maps of more than 32 keys: their first `:samples` entries in the map's own
      order, which is hash order and so a fair sample; the map's trie takes its
      expected size (on random maps, within 1.7% of the real one at 100 keys, 1% at
      1,000 and 0.06% at 100,000);
    * a collection inside a sampled element takes at most 32 picks, so nested
      collections cost `:samples` × 32 visits rather than `:samples`².

  The estimate is unbiased, and its error shrinks as 1/√samples with the spread of
  element sizes: at the default, the 95th percentile of the error against
  `:erts_debug.flat_size/1` was under 2% on maps, lists and tuples of same-shaped
  elements (structs of varying contents), about 1.5% on a realistic guild state and
  5-10% on elements of wildly mixed shapes (see `bench/RESULTS.md`). Raise `:samples`
  for more accuracy; time grows in proportion.

  Collections no larger than `:samples` are walked whole, so a term whose collections
  are all that small gets its exact size (`exact?: true`). With the same `:seed` the
  same term always gives the same estimate.

  ## Exactness and its limits

  `exact/1` walks everything and equals `:erts_debug.flat_size/1`, large maps included:
  their trie is rebuilt from the keys' hashes (`enif_hash` with OTP's map salts). A NIF
  cannot see everything `flat_size` sees, and where it cannot, the difference is
  bounded:

    * **Binaries.** Where `enif_inspect_binary` finds a binary's bytes tells a heap
      binary (`2 + ceil(bytes / 8)` words; its bytes follow its two header words in the
      object the term points to) from a refcounted one or a sub-binary of one (6 words,
      as `flat_size` counts them at any length; small results of `<>` and small
      binaries received in messages are such). Two rare kinds look like the latter: a
      sub-binary at a bit offset (counted 6 instead of 11: 5 words off), and a
      sub-binary of a small heap binary (counted 6 instead of `2 + ceil(bytes / 8)`: at
      most 4 words off; OTP 25 copies such small slices into heap binaries, so none
      was seen in testing).
    * **Bitstrings that are not whole bytes** (`<<1::3>>`): read through their external
      format. Up to 64 bytes, the binary under them may be a heap or a refcounted one;
      they count as heap, at most 4 words off.
    * **References.** A local reference counts 3 words and another node's 5 (told apart
      by node name and creation). An alias (`:erlang.alias/0`, and the references
      `GenServer.call/3` makes) takes 4 words but looks like any local reference: 1 word
      off each.
    * **Funs** count `5 + captured variables` words plus the variables' own sizes,
      read by rebuilding the variables from the fun's external format in a scratch
      environment (never on the caller's heap). A captured binary is rebuilt fresh, so
      the binary bound above applies to it.
    * Pids and ports take 0 words when local and 4 when remote; `enif_get_local_pid`
      tells which.

  `off_heap_binary_bytes` counts each off-heap binary at its own length, once per
  occurrence (as `flat_size` counts shared terms); a sub-binary keeps its whole parent
  alive, which can be more.

  ## Scheduling

  Nothing here holds a normal scheduler for more than about half a millisecond. Each
  call first runs on the calling scheduler with a work budget (about 10,000 subterms,
  and 0.4 ms by the clock); a term that needs more (a list longer than 16,384 cells,
  a big exact walk) or that can only be read by encoding it (funs, bignums over 4 KiB,
  bitstrings that are not whole bytes) is handed to a dirty CPU scheduler, which
  starts again from the top with the same seed and so gives the same answer. One
  exception no budget can cut short: `enif_inspect_binary` copies a binary that sits
  at a bit offset (a slice made by bit-level matching) in one call: 0.77 ms for a
  1 MB slice, measured on the project machine, so one of a megabyte or more holds the
  scheduler for about a millisecond. Other binaries, however large, are read in O(1).

  Reading a binary (`enif_inspect_binary`) makes a writable binary that is still being
  appended to read-only, as any NIF reading it does: the next append copies it once.
  """

  alias GuildKit.MemoryEstimator.Estimate
  alias GuildKit.Native

  @default_samples 200
  @default_seed 0
  @default_depth 2
  @default_timeout 5_000
  @estimate_options [samples: @default_samples, seed: @default_seed]
  @breakdown_options @estimate_options ++ [depth: @default_depth, min_bytes: 0]
  @process_options @breakdown_options ++ [timeout: @default_timeout]
  @max_u64 0xFFFF_FFFF_FFFF_FFFF
  @word_bytes 8
  # OTP stores maps of up to 32 keys flat: a header, size, key-tuple pointer, one slot
  # per value, and the key tuple (header plus one slot per key).
  @small_map_limit 32

  @typedoc "The path of a field from the root: map keys, outermost first."
  @type path :: [term()]

  @typedoc "A process to measure: anything `GenServer.call/3` accepts."
  @type server :: pid() | atom() | {atom(), node()} | {:global, term()} | {:via, module(), term()}

  @typedoc "Why `process/2` could not measure a process."
  @type process_error ::
          :noproc
          | :timeout
          | :not_sys_process
          | :calling_self
          | {:nodedown, node()}
          | {:estimate_failed, term()}

  @doc """
  Estimates the size of `term`, sampling collections larger than `:samples`.

  ## Options

    * `:samples` - elements sized per large collection, a positive integer (default
      `#{@default_samples}`). More samples, more accuracy and time.
    * `:seed` - an integer choosing the sample (default `#{@default_seed}`).

  Unknown or invalid options raise `ArgumentError`.

  ## Examples

      iex> estimate = GuildKit.MemoryEstimator.estimate(Enum.to_list(1..100))
      iex> {estimate.words, estimate.exact?, estimate.total}
      {200, true, 101}

      iex> members = Map.new(1..100_000, &{&1, %{id: &1, roles: [1, 2]}})
      iex> estimate = GuildKit.MemoryEstimator.estimate(members, samples: 512)
      iex> {estimate.exact?, estimate.sampled, estimate.total}
      {false, 4097, 800001}
      iex> abs(estimate.words - :erts_debug.flat_size(members)) / :erts_debug.flat_size(members) < 0.01
      true

  ## Performance

  O(k) per collection, where k is `:samples`, plus O(length) for the spine of each
  list met. A million-entry map of small structs takes about 20 µs at the default, a
  million-element list about 3 ms (see `bench/RESULTS.md`).
  """
  @spec estimate(term(), keyword()) :: Estimate.t()
  def estimate(term, opts \\ []) do
    opts = validate!(opts, @estimate_options)
    size(term, opts[:samples], opts[:seed])
  end

  @doc """
  Returns the exact size of `term`, by a full walk (`exact?: true`).

  Equals `:erts_debug.flat_size/1` in `words`, within the bounds listed in the module
  documentation.

  ## Examples

      iex> GuildKit.MemoryEstimator.exact(%{a: 1.0, b: "bin"}).words
      13
      iex> GuildKit.MemoryEstimator.exact(:binary.copy("x", 100)).off_heap_binary_bytes
      100

  ## Performance

  O(n) in the number of subterms, plus O(k log k) for each map of k > 32 keys;
  on a dirty CPU scheduler unless the term is small.
  """
  @spec exact(term()) :: Estimate.t()
  def exact(term) do
    to_estimate(Native.memory_exact(term))
  end

  @doc """
  Breaks the size of `term` down by the fields of its maps and structs.

  Returns `{path, estimate}` pairs, largest first (by `bytes + off_heap_binary_bytes`,
  ties by path). The first is always the whole term, at path `[]`. Maps and structs of
  up to 32 keys are broken down into their fields, down to `:depth` levels; larger maps
  are collections and are sized whole. A struct's `:__struct__` field is not listed.
  Each part adds up: a map's words are its own (2 per key plus 4) plus its keys' and
  fields' words.

  ## Options

    * `:samples`, `:seed` - as for `estimate/2`.
    * `:depth` - levels of maps to break down, a non-negative integer (default
      `#{@default_depth}`); `0` returns only the whole term.
    * `:min_bytes` - leave out fields smaller than this many bytes (counting
      `bytes + off_heap_binary_bytes`), a non-negative integer (default `0`). The whole
      term is always listed.

  ## Examples

      iex> state = %{members: Map.new(1..1000, &{&1, &1}), name: "guild", limits: %{max: 10}}
      iex> for {path, estimate} <- GuildKit.MemoryEstimator.breakdown(state), do: {path, estimate.words}
      [{[], 3738}, {[:members], 3719}, {[:limits], 6}, {[:name], 3}, {[:limits, :max], 0}]
      iex> GuildKit.MemoryEstimator.breakdown(state, depth: 1, min_bytes: 100) |> Enum.map(&elem(&1, 0))
      [[], [:members]]

  ## Performance

  One `estimate/2` per field, each O(k) per collection: tens of microseconds for a
  state of a million members.
  """
  @spec breakdown(term(), keyword()) :: [{path(), Estimate.t()}]
  def breakdown(term, opts \\ []) do
    opts = validate!(opts, @breakdown_options)
    {root, fields} = descend(term, [], opts[:depth], opts)

    fields =
      fields
      |> Enum.filter(fn {_path, estimate} -> size_bytes(estimate) >= opts[:min_bytes] end)
      |> Enum.sort_by(fn {path, estimate} -> {-size_bytes(estimate), path} end)

    [{[], root} | fields]
  end

  @doc """
  Measures the state of a live process, inside that process, and returns
  `{:ok, breakdown}` with the result of `breakdown/2` on the state.

  `server` is a pid or a name, as `GenServer.call/3` takes it. The process must handle
  `:sys` system messages: a `GenServer`, `Agent`, `:gen_statem` (whose state is the
  tuple `{state, data}`), `Supervisor`, or any `:proc_lib` special process. The
  function runs inside it through `:sys.replace_state/3`, which never sees a new state:
  the result leaves the process as an exception that `:sys` turns into its reply. So
  the state is neither copied out nor changed, and the process goes on serving calls.

  ## Errors

    * `{:error, :noproc}` - the process is dead, not registered, or exits meanwhile.
    * `{:error, :not_sys_process}` - a local process that does not handle `:sys`
      messages (a plain `spawn`, a `Task`, a process blocked in a call) or a
      `:gen_event` manager (which would send every handler's state back). Nothing is
      sent to it. A process handles `:sys` messages when a module on its stack
      implements `system_continue/3`, or when it hibernates.
    * `{:error, :timeout}` - no answer within `:timeout`. A late answer is dropped
      (the call uses an alias), so no stray message reaches the caller, and the target
      skips the measurement when it gets to the request after the deadline.
    * `{:error, :calling_self}` - `server` is the caller itself.
    * `{:error, {:nodedown, node}}` - the node of a remote process is down. Remote
      processes are not pre-checked: one that ignores `:sys` messages times out.
    * `{:error, {:estimate_failed, reason}}` - the measurement raised inside the
      process (the process is unaffected).

  ## Options

  Those of `breakdown/2`, and `:timeout` in milliseconds, a non-negative integer
  (default `#{@default_timeout}`). Invalid options and servers raise `ArgumentError`.

  ## Examples

      iex> {:ok, agent} = Agent.start_link(fn -> %{members: Map.new(1..1000, &{&1, :online})} end)
      iex> {:ok, [{[], total}, {[:members], members}]} = GuildKit.MemoryEstimator.process(agent)
      iex> {total.words, members.words}
      {3725, 3719}
      iex> Agent.get(agent, &map_size(&1.members))
      1000
      iex> GuildKit.MemoryEstimator.process(:no_such_process)
      {:error, :noproc}
      iex> GuildKit.MemoryEstimator.process(spawn(fn -> Process.sleep(1000) end))
      {:error, :not_sys_process}

  ## Performance

  One `:sys` round trip plus `breakdown/2` in the target: under 0.1 ms for a state of
  ten million words, against about 300 ms to copy it out with `:sys.get_state/1` and
  size the copy.
  """
  @spec process(server(), keyword()) ::
          {:ok, [{path(), Estimate.t()}]} | {:error, process_error()}
  def process(server, opts \\ []) do
    opts = validate!(opts, @process_options)
    {timeout, breakdown_opts} = Keyword.pop!(opts, :timeout)

    with {:ok, target} <- resolve(server),
         :ok <- check_sys_process(target) do
      measure_inside(target, breakdown_opts, timeout)
    end
  end

  # The measurement travels as a throw: :sys catches it and replies with it, keeping
  # the state untouched, whereas a normal return would be installed as the new state
  # and copied into the reply.
  defp measure_inside(target, opts, timeout) do
    tag = make_ref()
    deadline = if local?(target), do: System.monotonic_time(:millisecond) + timeout

    measure = fn state ->
      if deadline && System.monotonic_time(:millisecond) > deadline do
        throw({tag, :expired})
      end

      throw({tag, {:ok, breakdown(state, opts)}})
    end

    try do
      :gen.call(target, :system, {:replace_state, measure}, timeout)
    catch
      :exit, :timeout -> {:error, :timeout}
      :exit, :noproc -> {:error, :noproc}
      :exit, :calling_self -> {:error, :calling_self}
      :exit, {:nodedown, node} -> {:error, {:nodedown, node}}
      # The process exited while we waited.
      :exit, _reason -> {:error, :noproc}
    else
      {:ok, {:error, {:callback_failed, _, {:throw, {^tag, {:ok, _} = result}}}}} ->
        result

      {:ok, {:error, {:callback_failed, _, {class, reason}}}} ->
        {:error, {:estimate_failed, {class, reason}}}

      {:ok, other} ->
        {:error, {:estimate_failed, {:unexpected_reply, other}}}
    end
  end

  defp resolve(pid) when is_pid(pid), do: {:ok, pid}

  defp resolve(name) when is_atom(name) do
    case Process.whereis(name) do
      nil -> {:error, :noproc}
      pid -> {:ok, pid}
    end
  end

  defp resolve({name, node}) when is_atom(name) and is_atom(node) do
    if node == node(), do: resolve(name), else: {:ok, {name, node}}
  end

  defp resolve({:global, name}), do: whereis(:global.whereis_name(name))
  defp resolve({:via, module, name}) when is_atom(module), do: whereis(module.whereis_name(name))

  defp resolve(other) do
    raise ArgumentError,
          "expected a pid or a process name (atom, {atom, node}, {:global, term} or " <>
            "{:via, module, term}), got: #{inspect(other)}"
  end

  defp whereis(pid) when is_pid(pid), do: {:ok, pid}
  defp whereis(_undefined), do: {:error, :noproc}

  defp local?(target), do: is_pid(target) and node(target) == node()

  # Functions of :sys-handling modules that other processes run as clients: a process
  # blocked in one of them does not answer system messages.
  @client_functions [
    :call,
    :multi_call,
    :send_request,
    :wait_response,
    :receive_response,
    :check_response,
    :sync_notify,
    :notify,
    :cast,
    :reply,
    :start,
    :start_link,
    :start_monitor,
    :stop
  ]

  defp check_sys_process(target) do
    if local?(target) and target != self() do
      case Process.info(target, [:current_function, :current_stacktrace]) do
        nil -> {:error, :noproc}
        info -> if sys_process?(target, info), do: :ok, else: {:error, :not_sys_process}
      end
    else
      :ok
    end
  end

  defp sys_process?(target, current_function: {:erlang, :hibernate, 3}, current_stacktrace: _) do
    # A hibernating process shows no stack; proc_lib records what it runs.
    case Process.info(target, :dictionary) do
      {:dictionary, dictionary} -> not match?({:gen_event, _, _}, dictionary[:"$initial_call"])
      nil -> false
    end
  end

  defp sys_process?(_target, current_function: _, current_stacktrace: stack) do
    loop_modules =
      for {module, function, _arity, _location} <- stack,
          function not in @client_functions,
          function_exported?(module, :system_continue, 3),
          do: module

    loop_modules != [] and :gen_event not in loop_modules
  end

  # Sizes a term, or breaks a small map down into its fields.
  defp descend(map, path, depth, opts)
       when depth > 0 and is_map(map) and map_size(map) > 0 and map_size(map) <= @small_map_limit do
    struct? = is_atom(Map.get(map, :__struct__))

    parts =
      for {key, value} <- :maps.to_list(map) do
        {estimate, fields} = descend(value, path ++ [key], depth - 1, opts)
        {key, size(key, opts[:samples], opts[:seed]), estimate, fields}
      end

    own = %Estimate{
      words: 2 * map_size(map) + 4,
      bytes: (2 * map_size(map) + 4) * @word_bytes,
      off_heap_binary_bytes: 0,
      exact?: true,
      sampled: 1,
      total: 1
    }

    root =
      Enum.reduce(parts, own, fn {_key, key_estimate, estimate, _fields}, acc ->
        acc |> add(key_estimate) |> add(estimate)
      end)

    fields =
      for {key, _key_estimate, estimate, fields} <- parts,
          not (struct? and key == :__struct__),
          field <- [{path ++ [key], estimate} | fields],
          do: field

    {root, fields}
  end

  defp descend(term, path, _depth, opts) do
    # Each field gets its own sample, so that equal-length collections in different
    # fields are not sampled at the same positions.
    seed = :erlang.phash2({opts[:seed], path})
    {size(term, opts[:samples], seed), []}
  end

  defp add(%Estimate{} = a, %Estimate{} = b) do
    %Estimate{
      words: a.words + b.words,
      bytes: a.bytes + b.bytes,
      off_heap_binary_bytes: a.off_heap_binary_bytes + b.off_heap_binary_bytes,
      exact?: a.exact? and b.exact?,
      sampled: a.sampled + b.sampled,
      total: a.total + b.total
    }
  end

  defp size_bytes(%Estimate{bytes: bytes, off_heap_binary_bytes: off_heap}), do: bytes + off_heap

  defp size(term, samples, seed) do
    samples = min(samples, @max_u64)
    seed = Bitwise.band(seed, @max_u64)

    to_estimate(Native.memory_estimate(term, samples, seed))
  end

  defp to_estimate({words, off_heap_bytes, exact?, sampled, total}) do
    %Estimate{
      words: words,
      bytes: words * @word_bytes,
      off_heap_binary_bytes: off_heap_bytes,
      exact?: exact?,
      sampled: sampled,
      total: total
    }
  end

  defp validate!(opts, defaults) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected options to be a keyword list, got: #{inspect(opts)}"
    end

    opts = Keyword.validate!(opts, defaults)
    Enum.each(opts, &validate_option!/1)
    opts
  end

  defp validate_option!({:samples, value}) when is_integer(value) and value > 0, do: :ok
  defp validate_option!({:seed, value}) when is_integer(value), do: :ok
  defp validate_option!({:depth, value}) when is_integer(value) and value >= 0, do: :ok
  defp validate_option!({:min_bytes, value}) when is_integer(value) and value >= 0, do: :ok
  defp validate_option!({:timeout, value}) when is_integer(value) and value >= 0, do: :ok

  defp validate_option!({key, value}) do
    expected =
      case key do
        :samples -> "a positive integer"
        :seed -> "an integer"
        _ -> "a non-negative integer"
      end

    raise ArgumentError, "expected #{inspect(key)} to be #{expected}, got: #{inspect(value)}"
  end
end

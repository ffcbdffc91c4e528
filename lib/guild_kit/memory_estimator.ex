defmodule GuildKit.MemoryEstimator do
  @moduledoc """
  The memory a term takes, sampled in time independent of the size of its large
  collections, and the memory of a live process's state, measured inside the process
  without copying it out.

  `:erts_debug.flat_size/1` walks every word of a term on a normal scheduler, and
  `:sys.get_state/1` first copies the whole state to the caller, so both take time in
  proportion to the state and hold a scheduler meanwhile. This module walks terms in
  Rust, samples large collections, moves long walks to dirty schedulers, and runs
  `process/2` inside the target.

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
  element sizes. At the default, the test suite holds the 95th percentile of the error
  against `:erts_debug.flat_size/1` under 2% on maps, lists and tuples of same-shaped
  elements (structs of varying contents), under 5% on a realistic guild state and under
  15% on elements of wildly mixed shapes (figures in `bench/RESULTS.md`). Raise
  `:samples` for more accuracy; time grows in proportion.

  Collections no larger than `:samples` are walked whole, so a term whose collections
  are all that small gets its exact size (`exact?: true`). With the same `:seed` the
  same term always gives the same estimate.

  ## Exactness

  `exact/1` walks everything and equals `:erts_debug.flat_size/1`, as does any
  estimate with `exact?: true`. Every term is read where it lies, in constant time,
  copying nothing: the header of each boxed object (which gives the size of bignums,
  floats, references, aliases, heap and refcounted binaries, and other nodes' pids,
  ports and references), the captured variables of funs and the creator pid they keep,
  the bit offset and parent of sub-binaries and bitstrings. Large maps get their exact
  trie, rebuilt from their keys' hashes (`enif_hash` with OTP's map salts).

  `off_heap_binary_bytes` counts each off-heap binary at its own length, once per
  occurrence (as `flat_size` counts shared terms); a sub-binary keeps its whole parent
  alive, which can be more.

  ## Supported releases

  The model follows the object layouts of 64-bit OTP 25. On first use it checks
  itself, once per VM: the layout of funs and sub-binaries on probe terms of known
  contents, the sizes against `:erts_debug.flat_size/1` on a fixed corpus of every kind
  of term, and, on the first `process/2`, the `:sys` reply it relies on, on a probe
  process. On a release where a check fails, nothing breaks and nothing reads past an
  object's header: sizes are reported with `exact?: false` (funs without their captured
  variables, sub-binaries as the most common kind), and `process/2` returns
  `{:error, :unsupported}` without sending anything to the target.

  ## Scheduling

  No call holds a normal scheduler for more than about half a millisecond, on any
  input. Each call first runs on the calling scheduler with a work budget (about 20,000
  subterms, and 0.4 ms by the clock); a term that needs more is handed to a dirty CPU
  scheduler, which starts again from the top with the same seed and so gives the same
  answer. Reading a term costs the same whatever its payload: a 100 MB binary, a binary
  at a bit offset, a bignum or a fun capturing a large state is one step. The only work
  that grows with payload bytes, hashing the keys of a large map walked whole, is
  budgeted by those bytes. The walk's memory grows with the nesting of the term, never
  with the size of binaries in it, and the results are small: at most 1,000 fields for
  `breakdown/2` and `process/2`.
  """

  alias GuildKit.MemoryEstimator.{Estimate, Model}
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
  # Bounds of breakdown/2: fields listed, and keys in all their paths.
  @max_fields 1_000
  @max_path_keys 10_000
  # Thrown when a measurement inside a process passes its deadline.
  @expired {__MODULE__, :expired}

  @typedoc "The path of a field from the root: map keys, outermost first."
  @type path :: [term()]

  @typedoc "A process to measure: a pid or a name, as `GenServer.call/3` takes them."
  @type server :: pid() | atom() | {atom(), node()} | {:global, term()} | {:via, module(), term()}

  @typedoc "Why `process/2` could not measure a process."
  @type process_error ::
          :noproc
          | :timeout
          | :not_sys_process
          | :calling_self
          | :unsupported
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

  O(k) per collection met, where k is `:samples` (32 inside sampled elements), plus
  O(length) for the spine of each list met: a map of a million entries costs as much
  as one of a thousand.
  """
  @spec estimate(term(), keyword()) :: Estimate.t()
  def estimate(term, opts \\ []) do
    opts = validate!(opts, @estimate_options)
    size(term, opts[:samples], opts[:seed], :infinity)
  end

  @doc """
  Returns the exact size of `term`, by a full walk.

  Equals `:erts_debug.flat_size/1` in `words`, with `exact?: true` once the model is
  verified on this VM (see "Supported releases" above).

  ## Examples

      iex> GuildKit.MemoryEstimator.exact(%{a: 1.0, b: "bin"}).words
      13
      iex> GuildKit.MemoryEstimator.exact(:binary.copy("x", 100)).off_heap_binary_bytes
      100

  ## Performance

  O(n) in the number of subterms, plus O(k log k) for each map of k > 32 keys, and
  O(1) per binary, bignum or fun whatever it holds; on a dirty CPU scheduler unless the
  term is small.
  """
  @spec exact(term()) :: Estimate.t()
  def exact(term) do
    # First: on first use, the check enables the reading of funs and sub-binaries.
    verified? = Model.sizes_verified?()
    to_estimate(Native.memory_exact(term), verified?)
  end

  @doc """
  Breaks the size of `term` down by the fields of its maps and structs.

  Returns `{path, estimate}` pairs, largest first (by `bytes + off_heap_binary_bytes`,
  ties in breadth-first order). The first is always the whole term, at path `[]`. Maps and structs of
  up to 32 keys are broken down into their fields, down to `:depth` levels; larger maps
  are collections and are sized whole. A struct's `:__struct__` field is not listed.
  Each part adds up: a map's words are its own (2 per key plus 4) plus its keys' and
  fields' words.

  ## Bounds

  At most #{@max_fields} fields are listed, whose paths hold at most #{@max_path_keys}
  keys in all, however deep the term and the `:depth`. Maps are broken down
  breadth-first (shallower fields first), each one whole or not at all: a map whose
  fields would pass either bound is sized whole instead. The whole term's size never
  depends on the bounds.

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

  One `estimate/2` per field and key listed, each O(k) per collection: at most
  #{@max_fields} fields, whatever the size of the term. Sorting the fields takes
  O(f log f) for f fields.
  """
  @spec breakdown(term(), keyword()) :: [{path(), Estimate.t()}]
  def breakdown(term, opts \\ []) do
    opts = validate!(opts, @breakdown_options)
    fields(term, opts, :infinity)
  end

  @doc """
  Measures the state of a live process, inside that process, and returns
  `{:ok, breakdown}` with the result of `breakdown/2` on the state.

  `server` is a pid or a name, as `GenServer.call/3` takes it: a pid, a registered
  name, `{name, node}`, `{:global, name}` or `{:via, module, name}`. The process must
  handle `:sys` system messages: a `GenServer`, `Agent`, `:gen_statem` (whose state is
  the tuple `{state, data}`), `Supervisor`, or any `:proc_lib` special process,
  hibernating or suspended with `:sys.suspend/1`. The function runs inside it through
  `:sys.replace_state/3`, which never sees a new state: the result leaves the process
  as an exception that `:sys` turns into its reply. So the state is neither copied out
  nor changed, and the process goes on serving calls.

  ## Errors

    * `{:error, :noproc}` - the process is dead, not registered, or exits meanwhile.
    * `{:error, :not_sys_process}` - a local process that does not handle `:sys`
      messages (a plain `spawn`, a `Task`, a process blocked in a call) or a
      `:gen_event` manager (which would send every handler's state back). Nothing is
      sent to it. A process handles `:sys` messages when a module on its stack
      implements `system_continue/3`, when it is answering another system message,
      or when it hibernates or is suspended.
    * `{:error, :timeout}` - no answer within `:timeout`. A late answer is dropped
      (the call uses an alias), so no stray message reaches the caller. The target
      stops working on the measurement at the deadline too: it skips a request it gets
      to late, and a measurement under way gives up within about a millisecond of the
      deadline (on another node, the deadline counts from the request's arrival).
      The first call in a VM also checks the `:sys` protocol on a probe process
      within `:timeout`; a probe that cannot answer in time gives this error too,
      and the check runs again on the next call.
    * `{:error, :calling_self}` - `server` is the caller itself.
    * `{:error, {:nodedown, node}}` - the node of a remote process is down. Remote
      processes are not pre-checked: one that ignores `:sys` messages times out.
    * `{:error, :unsupported}` - the `:sys` protocol did not behave as on OTP 25 when
      checked on a probe process (see "Supported releases"); nothing is sent to
      `server`.
    * `{:error, {:estimate_failed, reason}}` - the measurement raised inside the
      process (the process is unaffected).

  Invalid options and servers raise `ArgumentError`, among them a `{:via, module,
  name}` whose module does not export `whereis_name/1`.

  ## Options

  Those of `breakdown/2`, and `:timeout` in milliseconds, a non-negative integer
  (default `#{@default_timeout}`).

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

  One `:sys` round trip plus `breakdown/2` in the target: the caller waits for a small
  reply, and nothing the size of the state is copied.
  """
  @spec process(server(), keyword()) ::
          {:ok, [{path(), Estimate.t()}]} | {:error, process_error()}
  def process(server, opts \\ []) do
    opts = validate!(opts, @process_options)
    {timeout, breakdown_opts} = Keyword.pop!(opts, :timeout)

    with {:ok, target} <- resolve(server),
         :ok <- check_sys_process(target),
         :ok <- check_protocol(timeout) do
      measure_inside(target, breakdown_opts, timeout)
    end
  end

  # The measurement travels as a throw: :sys catches it and replies with it, keeping
  # the state untouched, whereas a normal return would be installed as the new state
  # and copied into the reply.
  defp measure_inside(target, opts, timeout) do
    tag = make_ref()
    # Monotonic clocks of two nodes differ: a remote target counts from the arrival.
    deadline = if local?(target), do: now() + timeout * 1000

    measure = fn state ->
      deadline = deadline || now() + timeout * 1000

      result =
        try do
          {:ok, fields(state, opts, deadline)}
        catch
          :throw, @expired -> :expired
        end

      throw({tag, result})
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

      {:ok, {:error, {:callback_failed, _, {:throw, {^tag, :expired}}}}} ->
        {:error, :timeout}

      {:ok, {:error, {:callback_failed, _, {class, reason}}}} ->
        {:error, {:estimate_failed, {class, reason}}}

      {:ok, other} ->
        {:error, {:estimate_failed, {:unexpected_reply, other}}}
    end
  end

  defp now, do: System.monotonic_time(:microsecond)

  # The reply shape measure_inside matches is :sys's, checked once on a probe Agent
  # whose state it must size exactly and leave unchanged. A probe that did not answer
  # in time (a loaded machine) decides nothing: the check runs again on the next call
  # instead of refusing every later one.
  defp check_protocol(timeout) do
    case Model.protocol_verified?(fn -> protocol_holds?(timeout) end) do
      true -> :ok
      false -> {:error, :unsupported}
      :undecided -> {:error, :timeout}
    end
  end

  defp protocol_holds?(timeout) do
    state = %{probe: Enum.to_list(1..10)}
    {:ok, probe} = Agent.start(fn -> state end)

    try do
      opts = Keyword.put(@breakdown_options, :depth, 0)

      case measure_inside(probe, opts, timeout) do
        {:ok, [{[], estimate}]} ->
          estimate.words == :erts_debug.flat_size(state) and
            Agent.get(probe, & &1, timeout) == state

        {:error, :timeout} ->
          :undecided

        _other ->
          false
      end
    rescue
      _ -> false
    catch
      :exit, {:timeout, _} -> :undecided
      :exit, _ -> false
    after
      Process.exit(probe, :kill)
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

  defp resolve({:via, module, name} = server) when is_atom(module) do
    if Code.ensure_loaded?(module) and function_exported?(module, :whereis_name, 1) do
      whereis(module.whereis_name(name))
    else
      raise ArgumentError,
            "expected {:via, module, name} with a module that exports whereis_name/1, " <>
              "got: #{GuildKit.Describe.describe(server)}"
    end
  end

  defp resolve(other) do
    raise ArgumentError,
          "expected a pid or a process name (atom, {atom, node}, {:global, term} or " <>
            "{:via, module, term}), got: #{GuildKit.Describe.describe(other)}"
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

  # A hibernating process shows no stack, and a suspended one only :sys's loop, which
  # answers system messages.
  defp sys_process?(target, current_function: {module, function, _}, current_stacktrace: _)
       when {module, function} in [{:erlang, :hibernate}, {:sys, :suspend_loop}] do
    not gen_event_or_gone?(target)
  end

  defp sys_process?(target, current_function: _, current_stacktrace: stack) do
    loop_modules =
      for {module, function, _arity, _location} <- stack,
          function not in @client_functions,
          function_exported?(module, :system_continue, 3),
          do: module

    cond do
      :gen_event in loop_modules ->
        false

      loop_modules != [] ->
        true

      # Answering another system message (a :sys.get_state/1 reply being copied, say):
      # only :sys and :gen are on the stack until it goes back to its loop.
      Enum.any?(stack, &match?({:sys, :handle_system_msg, _, _}, &1)) ->
        not gen_event_or_gone?(target)

      true ->
        false
    end
  end

  # proc_lib records what the process runs; a process gone meanwhile is refused too.
  defp gen_event_or_gone?(target) do
    case Process.info(target, :dictionary) do
      {:dictionary, dictionary} -> match?({:gen_event, _, _}, dictionary[:"$initial_call"])
      nil -> true
    end
  end

  # breakdown/2 with a deadline (a monotonic time in microseconds, or :infinity) past
  # which it throws @expired.
  defp fields(term, opts, deadline) do
    [root | fields] =
      term
      |> plan(opts[:depth])
      |> size_fields(opts, deadline)

    # Ties go in breadth-first order (by index): comparing paths could compare huge keys.
    fields =
      for {_index, path, estimate} <-
            Enum.sort_by(fields, &{-size_bytes(elem(&1, 2)), elem(&1, 0)}),
          size_bytes(estimate) >= opts[:min_bytes],
          do: {path, estimate}

    [root | fields]
  end

  # The fields to list, breadth-first from the root: {index, parent index, key, path
  # reversed, value, listed?, :whole | {:map, size}}, deepest first. A small map is
  # broken down only while the listed fields and their path keys stay within bounds.
  defp plan(term, depth) do
    root = {0, nil, nil, [], term, false, 0}
    plan(:queue.from_list([root]), depth, {1, 0, 0}, [])
  end

  defp plan(queue, depth, {next, listed, keys} = counts, planned) do
    case :queue.out(queue) do
      {:empty, _} ->
        planned

      {{:value, {index, parent, key, path, value, listed?, level}}, queue} ->
        size = if small_map?(value), do: map_size(value), else: 0

        if size > 0 and level < depth and listed + size <= @max_fields and
             keys + size * (level + 1) <= @max_path_keys do
          struct? = is_atom(Map.get(value, :__struct__))

          {queue, next} =
            Enum.reduce(:maps.to_list(value), {queue, next}, fn {k, v}, {queue, next} ->
              child =
                {next, index, k, [k | path], v, not (struct? and k == :__struct__), level + 1}

              {:queue.in(child, queue), next + 1}
            end)

          node = {index, parent, key, path, value, listed?, {:map, size}}
          plan(queue, depth, {next, listed + size, keys + size * (level + 1)}, [node | planned])
        else
          node = {index, parent, key, path, value, listed?, :whole}
          plan(queue, depth, counts, [node | planned])
        end
    end
  end

  defp small_map?(value),
    do: is_map(value) and map_size(value) > 0 and map_size(value) <= @small_map_limit

  # Sizes the planned fields, children before their parents: a map broken down is its
  # own words plus its keys' and fields'. Returns the root, then the listed fields.
  defp size_fields(planned, opts, deadline) do
    {root, fields, _parts} =
      Enum.reduce(planned, {nil, [], %{}}, &size_field(&1, &2, opts, deadline))

    [{[], root} | fields]
  end

  defp size_field({index, parent, key, path, value, listed?, kind}, acc, opts, deadline) do
    {root, fields, parts} = acc
    path = Enum.reverse(path)

    {estimate, parts} =
      case kind do
        # Each field gets its own sample, so that equal-length collections in
        # different fields are not sampled at the same positions.
        :whole ->
          {size(value, opts[:samples], :erlang.phash2({opts[:seed], index}), deadline), parts}

        {:map, size} ->
          {fields_size, parts} = Map.pop(parts, index)
          {add(fields_size, own(size)), parts}
      end

    if parent == nil do
      {estimate, fields, parts}
    else
      part = add(size(key, opts[:samples], opts[:seed], deadline), estimate)
      fields = if listed?, do: [{index, path, estimate} | fields], else: fields
      {root, fields, Map.update(parts, parent, part, &add(&1, part))}
    end
  end

  defp own(size) do
    words = 2 * size + 4

    %Estimate{
      words: words,
      bytes: words * @word_bytes,
      off_heap_binary_bytes: 0,
      exact?: true,
      sampled: 1,
      total: 1
    }
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

  defp size(term, samples, seed, deadline) do
    verified? = Model.sizes_verified?()

    case Native.memory_estimate(term, samples, seed, time_limit(deadline)) do
      :timeout -> throw(@expired)
      result -> to_estimate(result, verified?)
    end
  end

  defp time_limit(:infinity), do: :infinity

  defp time_limit(deadline) do
    case deadline - now() do
      left when left > 0 -> left
      _passed -> throw(@expired)
    end
  end

  defp to_estimate({words, off_heap_bytes, exact?, sampled, total}, verified?) do
    %Estimate{
      words: words,
      bytes: words * @word_bytes,
      off_heap_binary_bytes: off_heap_bytes,
      exact?: exact? and verified?,
      sampled: sampled,
      total: total
    }
  end

  defp validate!(opts, defaults) do
    opts = GuildKit.Describe.options!(opts, defaults)
    Enum.each(opts, &validate_option!/1)
    # What the NIF takes: at most 2^64 - 1 samples, and the seed's low 64 bits.
    opts
    |> Keyword.update!(:samples, &min(&1, @max_u64))
    |> Keyword.update!(:seed, &Bitwise.band(&1, @max_u64))
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

    raise ArgumentError,
          "expected #{GuildKit.Describe.describe(key)} to be #{expected}, got: #{GuildKit.Describe.describe(value)}"
  end
end

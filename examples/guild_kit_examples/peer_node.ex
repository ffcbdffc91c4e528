defmodule GuildKit.Examples.PeerNode do
  @moduledoc """
  Starts peer nodes on 127.0.0.1 that run the `:guild_kit` application, for the demo
  and the tests that need several nodes on one machine.

      peers = GuildKit.Examples.PeerNode.start_many(2)
      [%{node: node} | _] = peers
      GuildKit.Examples.PeerNode.call(node, GuildKit.Fanout, :stats, [])
      GuildKit.Examples.PeerNode.stop(hd(peers))

  Everything a peer needs is set up here: epmd, distribution on this node (with a
  unique name, so parallel runs on one machine do not clash), the code paths of this
  node (so the peer loads the project's modules and finds the NIF through
  `:code.priv_dir(:guild_kit)`), and the application.

  Code run on a peer must come from modules compiled to disk: `lib/`, `examples/`,
  `test/support/`, or OTP and Elixir. Functions defined in `.exs` test files exist only on the test
  node, so pass module, function, and arguments to `call/5` instead of closures.

  A peer is linked to the process that started it and stops when that process exits;
  start peers in `setup_all` (or a long-lived process) to share them across tests.
  """

  @typedoc "A running peer node."
  @type t :: %{peer: pid(), node: node()}

  @doc """
  Starts distribution on this node, unless it is already distributed, and returns the
  node name. Starts epmd first when needed.
  """
  @spec ensure_distributed!() :: node()
  def ensure_distributed! do
    unless Node.alive?(), do: start_distribution()
    node()
  end

  defp start_distribution do
    # A no-op when epmd already runs.
    {_, 0} = System.cmd("epmd", ["-daemon"])
    name = :"guild_kit_#{System.pid()}@127.0.0.1"
    {:ok, _} = :net_kernel.start([name, :longnames])
    :ok
  end

  @doc """
  Starts one peer running the listed applications and returns it.

  ## Options

    * `:applications` - applications to start on the peer (default `[:guild_kit]`);
    * `:env` - `[{app, key, value}]` set on the peer before its applications start;
    * `:name` - the peer's name before `@127.0.0.1` (default: unique).
  """
  @spec start(keyword()) :: t()
  def start(opts \\ []) do
    opts = Keyword.validate!(opts, applications: [:guild_kit], env: [], name: nil)
    ensure_distributed!()
    name = opts[:name] || :"gk_peer_#{System.pid()}_#{System.unique_integer([:positive])}"

    {:ok, peer, node} =
      :peer.start_link(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        # Peers connect only to this node: no mesh between them, and no disconnects by
        # `global` (which guards a full mesh) when one of them is stopped.
        args:
          [
            ~c"-connect_all",
            ~c"false",
            ~c"-kernel",
            ~c"prevent_overlapping_partitions",
            ~c"false"
          ] ++
            code_path_args(),
        wait_boot: 30_000
      })

    for {app, _key, _value} <- opts[:env], do: call(node, Application, :load, [app])
    for {app, key, value} <- opts[:env], do: call(node, Application, :put_env, [app, key, value])

    for app <- opts[:applications] do
      {:ok, _} = call(node, Application, :ensure_all_started, [app])
    end

    %{peer: peer, node: node}
  end

  @doc "Starts `count` peers, one after another, with the options of `start/1`."
  @spec start_many(pos_integer(), keyword()) :: [t()]
  def start_many(count, opts \\ []) when is_integer(count) and count > 0 do
    for _ <- 1..count, do: start(opts)
  end

  @doc """
  Stops a peer and waits until this node has seen it go down.
  """
  @spec stop(t()) :: :ok
  def stop(%{peer: peer, node: node}) do
    true = Node.monitor(node, true)

    try do
      :peer.stop(peer)
    catch
      # Already stopped.
      :exit, _ -> :ok
    end

    receive do
      {:nodedown, ^node} -> :ok
    after
      10_000 -> raise "peer #{node} did not go down"
    end
  end

  @doc """
  Runs `apply(module, function, args)` on `node` and returns its result; raises what it
  raises. Waits at most `timeout` ms.
  """
  @spec call(node(), module(), atom(), [term()], timeout()) :: term()
  def call(node, module, function, args, timeout \\ 60_000) do
    :erpc.call(node, module, function, args, timeout)
  end

  # -pa for every code path outside OTP's own lib directory: the project's ebin (with
  # test/support compiled in) and Elixir's libraries. OTP's are the peer's already.
  defp code_path_args do
    otp = :code.lib_dir()

    :code.get_path()
    |> Enum.reject(&List.starts_with?(&1, otp))
    |> Enum.flat_map(&[~c"-pa", &1])
  end
end

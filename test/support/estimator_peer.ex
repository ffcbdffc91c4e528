defmodule GuildKit.Test.EstimatorPeer do
  @moduledoc """
  Starts a `:peer` node on this machine for the `GuildKit.MemoryEstimator` tests, so
  that they can size real remote pids, ports and references and measure processes on
  another node.

  Distribution is started here if the test VM does not run it yet (after making sure
  epmd runs); a VM that is already distributed is used as it is. The peer gets this
  VM's code paths, so it can load GuildKit and its NIF.
  """

  @doc """
  Starts a peer node and returns `{peer, node}`.

  The peer is not linked to the caller (an ExUnit `setup_all` process exits right
  after setup), so stop it with `stop/1`, typically in `on_exit/1`.
  """
  @spec start() :: {pid(), node()}
  def start do
    ensure_distributed!()
    name = :peer.random_name(~c"estimator_peer")
    args = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    case :peer.start(%{name: name, host: ~c"127.0.0.1", args: args}) do
      {:ok, peer, node} -> {peer, node}
      other -> raise "could not start a peer node: #{inspect(other)}"
    end
  end

  @doc "Stops a peer started by `start/0`."
  @spec stop(pid()) :: :ok
  def stop(peer), do: :peer.stop(peer)

  defp ensure_distributed! do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      name = :"estimator_test_#{System.unique_integer([:positive])}@127.0.0.1"

      case :net_kernel.start([name, :longnames]) do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
        {:error, reason} -> raise "could not start distribution: #{inspect(reason)}"
      end
    end

    :ok
  end
end

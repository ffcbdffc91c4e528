defmodule GuildKit.Test.Peers do
  @moduledoc """
  A `setup_all` callback for the test modules that share one `:peer` node:

      import GuildKit.Test.Peers, only: [start_peer: 1]
      setup_all :start_peer
  """

  import ExUnit.Callbacks, only: [on_exit: 1]
  alias GuildKit.Examples.PeerNode

  @doc """
  Starts a peer running `:guild_kit`, stopped when the module's tests are done, and
  puts its node in the context as `:node`.
  """
  @spec start_peer(map()) :: %{node: node()}
  def start_peer(_context) do
    peer = PeerNode.start()
    on_exit(fn -> PeerNode.stop(peer) end)
    %{node: peer.node}
  end
end

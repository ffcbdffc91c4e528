defmodule GuildKit.Test.RelayGuild do
  @moduledoc """
  A minimal guild for the relay tests: a process that owns a `GuildKit.Relay` handle,
  runs functions on it (`run/2`) and passes every other message to
  `GuildKit.Relay.handle_info/2`, as a real guild does.

      {:ok, guild} = GuildKit.Test.RelayGuild.start(:g, [])
      :ok = GuildKit.Test.RelayGuild.run(guild, fn relays ->
        {:ok, relays} = GuildKit.Relay.connect(relays, self(), :ann, [])
        {:ok, relays}
      end)
  """
  use GenServer

  alias GuildKit.Relay

  @doc "Starts a guild (unlinked) whose handle is `Relay.new(guild_id, opts)`."
  @spec start(term(), keyword()) :: GenServer.on_start()
  def start(guild_id, opts), do: GenServer.start(__MODULE__, {guild_id, opts})

  @doc """
  Runs `fun.(relays)` in the guild; `fun` returns `{result, relays}`, and `result` is
  returned. A raise in `fun` is returned as `{:raised, exception}`, the handle kept as it
  was.
  """
  @spec run(GenServer.server(), (Relay.t() -> {term(), Relay.t()})) :: term()
  def run(guild, fun), do: GenServer.call(guild, {:run, fun}, :infinity)

  @doc """
  Polls `check` every 10 ms until it returns true; fails the test after `tries` polls.
  """
  @spec wait_until((() -> boolean()), non_neg_integer()) :: :ok
  def wait_until(check, tries \\ 500) do
    cond do
      check.() -> :ok
      tries == 0 -> ExUnit.Assertions.flunk("condition not reached")
      true -> Process.sleep(10) && wait_until(check, tries - 1)
    end
  end

  @doc "The guild's handle (for checks that it did not change)."
  @spec relays(GenServer.server()) :: Relay.t()
  def relays(guild), do: run(guild, &{&1, &1})

  @impl GenServer
  def init({guild_id, opts}), do: {:ok, Relay.new(guild_id, opts)}

  @impl GenServer
  def handle_call({:run, fun}, _from, relays) do
    try do
      {result, relays} = fun.(relays)
      {:reply, result, relays}
    rescue
      exception -> {:reply, {:raised, exception}, relays}
    end
  end

  @impl GenServer
  def handle_info(message, relays) do
    case Relay.handle_info(message, relays) do
      {:ok, relays} -> {:noreply, relays}
      :ignore -> {:noreply, relays}
    end
  end
end

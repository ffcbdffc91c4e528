defmodule GuildKit.Test.Fuzz do
  @moduledoc """
  The loop of the fuzz tests: random terms, unsupported ones included, fed to public
  functions, each of which must return or raise `ArgumentError`. Seeded and printed:
  replay with `GUILD_KIT_SEED=<seed>`.
  """

  import ExUnit.Assertions
  alias GuildKit.Test.TermGenerator

  @typedoc "A public function call to try, named for the failure message."
  @type call :: {String.t(), (() -> term())}

  @doc """
  Runs `rounds` rounds. Each draws three terms `a`, `b` and `c` with `term.()`, picks
  one `{name, call}` of `calls.(a, b, c)` at random and runs `call.()`, which must
  return or raise `ArgumentError`. Prints the seed, labelled with `label`.
  """
  @spec run(String.t(), pos_integer(), (() -> term()), (term(), term(), term() -> [call()])) ::
          :ok
  def run(label, rounds, term, calls) do
    seed = TermGenerator.seed!(label)

    for round <- 1..rounds do
      [a, b, c] = for _ <- 1..3, do: term.()
      {name, call} = Enum.random(calls.(a, b, c))

      try do
        call.()
      rescue
        ArgumentError ->
          :ok

        other ->
          flunk(
            "seed #{seed}, round #{round}: #{name} raised #{inspect(other)} for #{inspect({a, b, c}, limit: 5)}"
          )
      end
    end

    :ok
  end

  @doc """
  A random term, often one that GuildKit cannot store: one of `handles` (the pids and
  ports the calls may be given: the only ones they can send to), a reference, a fun, an
  improper list, a bitstring, a pid inside a term, nesting 2,000 deep, a binary of up to
  100 KB, or else a term of `GuildKit.Test.TermGenerator`.
  """
  @spec term([pid() | port()]) :: term()
  def term(handles) do
    case :rand.uniform(12) do
      1 -> Enum.random(handles)
      2 -> make_ref()
      3 -> fn -> :fun end
      4 -> [1 | 2]
      5 -> <<1::5>>
      6 -> {self(), [make_ref()]}
      7 -> Enum.reduce(1..:rand.uniform(2_000), :leaf, fn _, acc -> {acc} end)
      8 -> :binary.copy(<<0>>, :rand.uniform(100_000))
      _ -> TermGenerator.term(3)
    end
  end
end

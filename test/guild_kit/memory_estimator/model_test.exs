defmodule GuildKit.MemoryEstimator.ModelTest do
  # The self-check of the size model against OTP internals, and what a failed check
  # means for results. Not async: the verdict is global to the VM.
  use ExUnit.Case, async: false

  alias GuildKit.MemoryEstimator
  alias GuildKit.MemoryEstimator.Model
  alias GuildKit.Native

  setup do
    on_exit(&Model.reset/0)
  end

  defp closure(x), do: fn -> x end

  test "the model holds on this VM, and is checked once" do
    Model.reset()
    assert Model.sizes_verified?()
    {micros, true} = :timer.tc(&Model.sizes_verified?/0)
    assert micros < 1000
    assert MemoryEstimator.exact(%{a: closure("x")}).exact?
  end

  test "unverified sizes are never reported exact" do
    Model.reset()
    :persistent_term.put({Model, :sizes_verified}, false)
    {:ok, agent} = Agent.start_link(fn -> %{a: 1} end)

    refute MemoryEstimator.exact(1.5).exact?
    refute MemoryEstimator.estimate([1, 2]).exact?
    assert Enum.all?(MemoryEstimator.breakdown(%{a: [1]}), fn {_, e} -> not e.exact? end)
    assert {:ok, [{[], estimate} | _]} = MemoryEstimator.process(agent)
    refute estimate.exact?
  end

  test "a failed check of the :sys protocol sends nothing to the target" do
    Model.reset()
    :persistent_term.put({Model, :protocol_verified}, false)
    {:ok, agent} = Agent.start_link(fn -> %{a: 1} end)
    :erlang.trace(agent, true, [:receive])
    assert MemoryEstimator.process(agent) == {:error, :unsupported}
    refute_receive {:trace, ^agent, :receive, _}, 50
    :erlang.trace(agent, false, [:receive])
  end

  test "a probe that cannot answer in time decides nothing" do
    Model.reset()
    {:ok, agent} = Agent.start_link(fn -> %{a: 1} end)
    assert MemoryEstimator.process(agent, timeout: 0) == {:error, :timeout}
    assert :persistent_term.get({Model, :protocol_verified}, :unchecked) == :unchecked
    assert {:ok, [{[], %{words: 6}} | _]} = MemoryEstimator.process(agent)
    assert :persistent_term.get({Model, :protocol_verified}) == true
  end

  test "the layout check refuses probes that do not match, on any term, without crashing" do
    x = :erlang.unique_integer()
    parent = :binary.copy("p", 1000)
    <<_::3, sub::bitstring-size(803), _::bitstring>> = parent
    good_fun = {closure(x), 0, [x], self()}
    good_sub = {sub, parent, 100, 3, 3}
    good_map = {%{a: x}, [:a], [x]}

    assert Native.memory_confirm_layout([good_fun], [good_sub], [good_map])

    wrong = [
      {[{closure(x), 0, [x + 1], self()}], [good_sub], [good_map]},
      {[{closure(x), 1, [x], self()}], [good_sub], [good_map]},
      {[{closure(x), 0, [x], :external}], [good_sub], [good_map]},
      {[good_fun], [{sub, parent, 100, 3, 2}], [good_map]},
      {[good_fun], [{sub, :binary.copy("p", 1000), 100, 3, 3}], [good_map]},
      {[good_fun], [good_sub], [{%{a: x}, [:b], [x]}]},
      {[good_fun], [good_sub], [{Map.new(1..40, &{&1, &1}), [], []}]},
      {[], [good_sub], [good_map]}
    ]

    for {funs, subs, maps} <- wrong do
      refute Native.memory_confirm_layout(funs, subs, maps)
    end

    # Probes of the wrong kind of term are read no further than their header.
    odd = [1, 1.5, "bin", :atom, [1], {1}, %{b: 1}, self(), make_ref(), 2 ** 100, <<1::3>>]

    for term <- [parent | odd] do
      refute Native.memory_confirm_layout([{term, 0, [], self()}], [good_sub], [good_map])
      refute Native.memory_confirm_layout([good_fun], [{term, parent, 0, 0, 0}], [good_map])
      refute Native.memory_confirm_layout([good_fun], [good_sub], [{term, [], []}])
    end

    for bad <- [:not_a_list, [:not_a_tuple], List.duplicate(good_fun, 65)] do
      assert_raise ArgumentError, ~r/argument 0: expected a short list/, fn ->
        Native.memory_confirm_layout(bad, [good_sub], [good_map])
      end
    end
  end
end

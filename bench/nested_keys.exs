# The cost of sorting keys for terms whose maps nest map keys, by depth: linear when
# every key is written once where it ends up, quadratic when each map's keys are
# copied into the map around it. Beside each, :erlang.term_to_binary/1 of the same term
# (a linear walk of it by the VM) as a floor.
#
#     MIX_ENV=prod mix run bench/nested_keys.exs
#
# Shapes: one map key a level (%{%{...} => 1} => 2}), two keys a level (the nested
# map and an atom), and 34 keys a level (a hash map: its keys iterate in hash order, so
# they move once when sorted). Each figure is the median of 3 SortedSet.add/2 calls.

Code.require_file("support/harness.exs", __DIR__)

defmodule GuildKit.Bench.NestedKeys do
  alias GuildKit.Bench.Harness
  alias GuildKit.SortedSet

  @runs 3

  @shapes [
    {"one map key a level", [50_000, 100_000, 200_000], &__MODULE__.one_key/1},
    {"two keys a level", [10_000, 20_000, 40_000], &__MODULE__.two_keys/1},
    {"34 keys a level (hash maps)", [2_500, 5_000, 10_000], &__MODULE__.hash_maps/1}
  ]

  def one_key(depth), do: Enum.reduce(1..depth, 0, &%{&2 => &1})
  def two_keys(depth), do: Enum.reduce(1..depth, 0, &%{&2 => &1, :a => 1})

  def hash_maps(depth),
    do: Enum.reduce(1..depth, 0, fn i, inner -> Map.put(Map.new(1..33, &{&1, i}), inner, i) end)

  def run do
    IO.puts("# Nested map keys\n")
    IO.puts("#{Harness.machine()} · load #{Harness.load()}\n")
    IO.puts("| shape | depth | SortedSet.add/2 | term_to_binary/1 |")
    IO.puts("| ----- | ----- | --------------- | ---------------- |")

    for {shape, depths, build} <- @shapes, depth <- depths do
      term = build.(depth)
      add = median(fn -> SortedSet.add(SortedSet.new(), term) end)
      floor = median(fn -> :erlang.term_to_binary(term) end)
      IO.puts("| #{shape} | #{depth} | #{Harness.format_ns(add)} | #{Harness.format_ns(floor)} |")
    end

    IO.puts("\nload after: #{Harness.load()}")
  end

  defp median(fun) do
    times =
      for _ <- 1..@runs do
        t0 = :erlang.monotonic_time(:nanosecond)
        fun.()
        :erlang.monotonic_time(:nanosecond) - t0
      end

    Enum.at(Enum.sort(times), div(@runs, 2))
  end
end

GuildKit.Bench.NestedKeys.run()

# The cost of moving a call to a dirty scheduler: `SortedSet.member?/2` of a 100 KiB
# binary, an input past the normal-scheduler budget of every GuildKit version, so that
# each call leaves its normal scheduler. Today a NIF reschedules itself
# (`enif_schedule_nif`); up to 60a41b4 it returned a sentinel and Elixir called a dirty
# twin. Run it in both checkouts, one after the other, and compare the medians:
#
#     MIX_ENV=prod mix run bench/dirty_round_trip.exs
#
# Also times the same lookup of a 1 KiB binary (normal scheduler) for reference.

set = GuildKit.SortedSet.from_enumerable(1..1_000)
big = :binary.copy("x", 100 * 1024)
small = :binary.copy("x", 1024)

time = fn term, calls ->
  samples =
    for _ <- 1..calls do
      t0 = :erlang.monotonic_time(:nanosecond)
      false = GuildKit.SortedSet.member?(set, term)
      :erlang.monotonic_time(:nanosecond) - t0
    end

  sorted = Enum.sort(samples)
  {Enum.at(sorted, div(calls, 2)), Enum.at(sorted, div(calls * 99, 100))}
end

time.(big, 200)
load = File.read!("/proc/loadavg") |> String.split() |> Enum.take(3) |> Enum.join(" ")

for {name, term, calls} <- [{"100 KiB (dirty)", big, 5_000}, {"1 KiB (normal)", small, 5_000}] do
  {median, p99} = time.(term, calls)

  IO.puts(
    "#{name}: median #{Float.round(median / 1000, 1)} µs, p99 #{Float.round(p99 / 1000, 1)} µs"
  )
end

IO.puts("load #{load}")

# How an idle pause before a call changes its cost: GuildKit.MemberList.put/4 on a
# 1,000,000-member list, back to back and after sleeping (or spinning) between calls.
#
#     MIX_ENV=prod mix run bench/member_list_idle.exs
#
# A guild that handles tens of events per second sleeps between them; on a virtual
# machine the next call then runs on cold caches and TLBs.

alias GuildKit.MemberList

roles = for r <- 1..10, do: {:role, r}
list = MemberList.new(groups: roles ++ [:online, :offline])

for i <- 1..1_000_000 do
  group =
    cond do
      i <= 50_000 -> Enum.random(roles)
      i <= 350_000 -> :online
      true -> :offline
    end

  MemberList.put(list, i, group, "n#{rem(i * 31, 9_973)}")
end

measure = fn pause ->
  times =
    for _ <- 1..500 do
      pause.()
      id = :rand.uniform(1_000_000)
      t0 = System.monotonic_time(:nanosecond)
      MemberList.put(list, id, Enum.random([:online, :offline]), "n#{rem(id * 31, 9_973)}")
      System.monotonic_time(:nanosecond) - t0
    end

  sorted = Enum.sort(times)
  "median #{Enum.at(sorted, 250) / 1000} µs, p99 #{Enum.at(sorted, 495) / 1000} µs"
end

spin = fn ms ->
  until = System.monotonic_time(:millisecond) + ms
  Stream.repeatedly(fn -> System.monotonic_time(:millisecond) end) |> Enum.find(&(&1 >= until))
end

IO.puts("back to back:        " <> measure.(fn -> :ok end))
IO.puts("after a 1 ms sleep:  " <> measure.(fn -> Process.sleep(1) end))
IO.puts("after a 5 ms sleep:  " <> measure.(fn -> Process.sleep(5) end))
IO.puts("after a 20 ms sleep: " <> measure.(fn -> Process.sleep(20) end))
IO.puts("after a 20 ms spin:  " <> measure.(fn -> spin.(20) end))

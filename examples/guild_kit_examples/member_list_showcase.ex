defmodule GuildKit.Examples.MemberListShowcase do
  @moduledoc """
  A million-member list on `GuildKit.SortedSet`, side by side with `:gb_sets`.

  Members are keyed like a real member sidebar, `{group_rank, display_name, user_id}`:
  ten hoisted roles, then online, then offline. A stream of joins, leaves and status
  changes is applied to both sets, and each operation is timed. GuildKit also returns
  the index of every change (what a client needs to patch its list); `:gb_sets` cannot,
  so it does strictly less work here.
  """

  alias GuildKit.SortedSet

  @roles 10
  @online @roles
  @offline @roles + 1

  @doc "Runs the showcase and prints its report. Options: `:members`, `:operations`, `:seed`."
  @spec run(keyword()) :: :ok
  def run(opts \\ []) do
    members = Keyword.get(opts, :members, 1_000_000)
    operations = Keyword.get(opts, :operations, 200_000)
    :rand.seed(:exsss, {Keyword.get(opts, :seed, 42), 7, 11})

    say("Generating #{members} members...")
    {keys, by_user} = generate(members)

    say("Building GuildKit.SortedSet...")
    {set_us, set} = :timer.tc(fn -> SortedSet.from_enumerable(keys) end)
    say("Building :gb_sets...")
    {gb_us, gb} = :timer.tc(fn -> :gb_sets.from_list(keys) end)

    say("Generating #{operations} joins, leaves and status changes...")
    stream = generate_stream(operations, by_user, members)

    say("Applying them to GuildKit.SortedSet...")
    ours = apply_stream(stream, set, &guild_kit_op/2)
    say("Applying them to :gb_sets...")
    theirs = apply_stream(stream, gb, &gb_sets_op/2)

    report(members, set_us, gb_us, ours, theirs, SortedSet.memory(set))
  end

  defp say(message), do: IO.puts("  · " <> message)

  defp generate(n) do
    Enum.map_reduce(1..n, %{}, fn i, by_user ->
      user_id = 100_000_000_000_000_000 + i * 7_919
      key = {random_group(), display_name(), user_id}
      {key, Map.put(by_user, user_id, key)}
    end)
  end

  defp random_group do
    case :rand.uniform(100) do
      r when r <= 5 -> :rand.uniform(@roles) - 1
      r when r <= 35 -> @online
      _ -> @offline
    end
  end

  @syllables ~w(ka ri to mi na so ha lu en do ra vi ze mo qu ty ar el is on)
  defp display_name do
    for(_ <- 1..(2 + :rand.uniform(3)), into: "", do: Enum.random(@syllables))
    |> String.capitalize()
  end

  # Each operation is {:join, key} | {:leave, key} | {:move, old_key, new_key}, drawn
  # against a model of who is present so that every operation is valid.
  defp generate_stream(count, by_user, members) do
    {ops, _} =
      Enum.map_reduce(1..count, {by_user, members}, fn _, {present, next_id} ->
        case :rand.uniform(10) do
          1 ->
            user_id = 100_000_000_000_000_000 + (next_id + 1) * 7_919
            key = {@online, display_name(), user_id}
            {{:join, key}, {Map.put(present, user_id, key), next_id + 1}}

          2 ->
            {user_id, key} = random_member(present, next_id)
            {{:leave, key}, {Map.delete(present, user_id), next_id}}

          _ ->
            {user_id, {group, name, _} = old} = random_member(present, next_id)
            new = {next_group(group), name, user_id}
            {{:move, old, new}, {Map.put(present, user_id, new), next_id}}
        end
      end)

    ops
  end

  defp random_member(present, next_id) do
    user_id = 100_000_000_000_000_000 + :rand.uniform(next_id) * 7_919

    case present do
      %{^user_id => key} -> {user_id, key}
      _ -> random_member(present, next_id)
    end
  end

  defp next_group(@online), do: @offline
  defp next_group(@offline), do: @online
  defp next_group(_role), do: Enum.random([@online, @offline])

  defp guild_kit_op({:join, key}, set), do: {elem(SortedSet.index_add(set, key), 0), set}
  defp guild_kit_op({:leave, key}, set), do: {elem(SortedSet.index_remove(set, key), 0), set}

  defp guild_kit_op({:move, old, new}, set) do
    {from, _} = SortedSet.index_remove(set, old)
    {to, _} = SortedSet.index_add(set, new)
    {{from, to}, set}
  end

  defp gb_sets_op({:join, key}, gb), do: {nil, :gb_sets.add(key, gb)}
  defp gb_sets_op({:leave, key}, gb), do: {nil, :gb_sets.delete(key, gb)}
  defp gb_sets_op({:move, old, new}, gb), do: {nil, :gb_sets.add(new, :gb_sets.delete(old, gb))}

  defp apply_stream(stream, state, fun) do
    {timings, _} =
      Enum.map_reduce(stream, state, fn op, state ->
        t0 = :erlang.monotonic_time(:nanosecond)
        {_result, state} = fun.(op, state)
        {{elem(op, 0), :erlang.monotonic_time(:nanosecond) - t0}, state}
      end)

    Enum.group_by(timings, &elem(&1, 0), &elem(&1, 1))
  end

  defp report(members, set_us, gb_us, ours, theirs, memory) do
    IO.puts("""

    Member list of #{members} members · #{System.schedulers_online()} schedulers · OTP #{:erlang.system_info(:otp_release)}

    | operation | GuildKit median | GuildKit p99 | :gb_sets median | :gb_sets p99 | count |
    |---|---|---|---|---|---|\
    """)

    for {kind, label} <- [join: "join (index_add)", leave: "leave (index_remove)", move: "status change (remove + add)"] do
      {a, b} = {stats(ours[kind]), stats(theirs[kind])}
      IO.puts("| #{label} | #{us(a.median)} | #{us(a.p99)} | #{us(b.median)} | #{us(b.p99)} | #{a.count} |")
    end

    IO.puts("""

    Build from a list: GuildKit #{div(set_us, 1000)} ms, :gb_sets #{div(gb_us, 1000)} ms.
    GuildKit native memory: #{Float.round(memory / members, 1)} bytes per member.
    GuildKit also returned the old and new index of every change; :gb_sets cannot.
    """)
  end

  defp stats(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    %{median: Enum.at(sorted, div(n, 2)), p99: Enum.at(sorted, min(n - 1, div(n * 99, 100))), count: n}
  end

  defp us(ns), do: "#{Float.round(ns / 1000, 2)} µs"
end

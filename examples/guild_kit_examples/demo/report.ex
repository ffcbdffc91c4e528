defmodule GuildKit.Examples.Demo.Report do
  @moduledoc """
  The demo's report: a text table for the terminal and a self-contained HTML page
  (no external assets; charts are inline SVG) with the same figures.
  """

  @doc """
  The report as text: one column per toolkit, then how many times better the first
  toolkit's figure is than each other's.
  """
  @spec text([map()], keyword()) :: String.t()
  def text(results, opts) do
    rows = figures(results)
    header = ["figure" | Enum.map(results, & &1.label)] ++ ratio_headers(results)

    body =
      for {name, values, ratios} <- rows do
        [name | Enum.map(values, &elem(&1, 1))] ++ ratios
      end

    ([title(opts), "", table([header | body]), ""] ++
       drain_notes(results) ++ stall_notes(results) ++ ["", targets(results)])
    |> Enum.join("\n")
  end

  defp ratio_headers([first | others]),
    do: Enum.map(others, &"#{short(first)} vs #{short(&1)}")

  defp short(%{toolkit: :relay}), do: "relays"
  defp short(%{toolkit: :guild_kit}), do: "direct"
  defp short(%{toolkit: :otp}), do: "OTP"

  @doc "The report as a self-contained HTML page."
  @spec html([map()], keyword()) :: String.t()
  def html(results, opts) do
    rows = figures(results)
    labels = Enum.map(results, & &1.label)

    table_html =
      "<table><tr><th>figure</th>" <>
        Enum.map_join(labels ++ ratio_headers(results), &"<th>#{escape(&1)}</th>") <>
        "</tr>" <>
        Enum.map_join(rows, fn {name, values, ratios} ->
          "<tr><td>#{escape(name)}</td>" <>
            Enum.map_join(Enum.map(values, &elem(&1, 1)) ++ ratios, &"<td>#{escape(&1)}</td>") <>
            "</tr>"
        end) <> "</table>"

    charts = [
      histogram("Member-list update time per event", Enum.map(results, &{&1.label, &1.updates})),
      histogram(
        "Time until every active session has an event",
        Enum.map(results, &{&1.label, &1.delivery})
      ),
      comparison(results)
    ]

    """
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>GuildKit demo</title>
    <style>
    body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
    table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
    td:first-child,th:first-child{text-align:left}h2{margin-top:2em}.note{color:#555;font-size:.9em}
    </style></head><body>
    <h1>GuildKit demo</h1><p>#{escape(title(opts))}</p>
    #{table_html}
    <pre class="note">#{escape(targets(results))}</pre>
    #{Enum.join(charts, "\n")}
    </body></html>
    """
  end

  defp title(opts) do
    peers = if opts[:nodes] > 0, do: ", sessions on #{opts[:nodes]} peer nodes", else: ""

    "#{format_int(opts[:members])} members · #{format_int(opts[:sessions])} online sessions " <>
      "(#{round(opts[:active] * 100)}% active) · #{opts[:rate]} events/s for #{opts[:seconds]} s#{peers} · " <>
      "#{System.schedulers_online()} schedulers · OTP #{:erlang.system_info(:otp_release)} · #{Date.utc_today()}"
  end

  # {name, [{number, text} per toolkit], [ratio text per other toolkit]}; a ratio is
  # how many times better the first toolkit's figure is than the other's.
  defp figures(results) do
    [
      {"member-list update, median", Enum.map(results, &duration(percentile(&1.updates, 0.5))),
       :lower},
      {"member-list update, p99", Enum.map(results, &duration(percentile(&1.updates, 0.99))),
       :lower},
      {"events applied per second", Enum.map(results, &rate(&1.events / &1.seconds)), :higher},
      {"events per second of guild time",
       Enum.map(results, &rate(&1.events / max(&1.busy_seconds, 1.0e-9))), :higher},
      {"every active session has an event, median",
       Enum.map(results, &duration(percentile(&1.delivery, 0.5))), :lower},
      {"every active session has an event, p99",
       Enum.map(results, &duration(percentile(&1.delivery, 0.99))), :lower},
      {"guild state, estimated", Enum.map(results, &estimated/1), nil},
      {"guild state, exact (:sys.get_state + flat_size)", Enum.map(results, &exact/1), nil},
      {"estimate time vs exact time", Enum.map(results, &estimate_speedup/1), nil},
      {"state sized during the run: times, longest", Enum.map(results, &sized_during_run/1),
       :lower},
      {"normal-scheduler stalls > 5 ms (guild, others)", Enum.map(results, &stalls/1), :lower},
      {"sessions whose sidebar copy matches", Enum.map(results, &checked/1), nil},
      {"passive sessions got: passive updates, mentions", Enum.map(results, &passive/1), nil}
    ]
    |> Enum.map(fn {name, [first | others] = values, better} ->
      {name, values, Enum.map(others, &ratio(first, &1, better))}
    end)
  end

  defp ratio({a, _}, {b, _}, :lower) when is_number(a) and is_number(b) and a > 0,
    do: "#{times(b / a)}"

  defp ratio({a, _}, {b, _}, :higher) when is_number(a) and is_number(b) and b > 0,
    do: "#{times(a / b)}"

  defp ratio(_, _, _), do: ""

  defp passive(%{passive: %{passive_updates: updates, mentions: mentions}}),
    do: {updates, "#{format_int(updates)}, #{format_int(mentions)}"}

  defp times(x) when x >= 100, do: "#{round(x)}×"
  defp times(x), do: "#{Float.round(x, 1)}×"

  defp targets([ours | _] = results) do
    theirs = Enum.find(results, &(&1.toolkit == :otp))
    p99_update = percentile(ours.updates, 0.99)
    p99_delivery = percentile(ours.delivery, 0.99)

    %{estimate: estimate, estimate_us: estimate_us, exact: exact, exact_us: exact_us} =
      ours.memory

    error = if estimate && exact > 0, do: abs(estimate - exact) / exact
    speedup = if estimate_us && estimate_us > 0, do: exact_us / estimate_us
    stalls = length(ours.stalls.guild)

    lines = [
      check(
        "member-list update p99 ≤ 5 µs",
        p99_update && p99_update <= 5_000,
        duration(p99_update) |> elem(1)
      ),
      check("guild never stalls a normal scheduler over 5 ms", stalls == 0, "#{stalls} stalls"),
      check(
        "every active session served within 50 ms p99",
        p99_delivery && p99_delivery <= 50_000_000,
        duration(p99_delivery) |> elem(1)
      ),
      check(
        "state estimate ≥ 100× faster than exact",
        speedup && speedup >= 100,
        speedup && times(speedup)
      ),
      check(
        "state estimate within 5% of exact",
        error && error <= 0.05,
        error && "#{Float.round(error * 100, 2)}%"
      )
    ]

    lines =
      if theirs do
        ours_rate = ours.events / max(ours.busy_seconds, 1.0e-9)
        their_rate = theirs.events / max(theirs.busy_seconds, 1.0e-9)

        lines ++
          [
            check(
              "≥ 5× the events per second of the OTP-only guild",
              ours_rate >= 5 * their_rate,
              times(ours_rate / their_rate)
            )
          ]
      else
        lines
      end

    "Targets:\n" <> Enum.join(lines, "\n")
  end

  defp check(name, ok, value),
    do: "  #{if ok, do: "met    ", else: "not met"}  #{name}: #{value || "n/a"}"

  defp estimated(%{memory: %{estimate: nil}}), do: {nil, "—"}

  defp estimated(%{memory: m}),
    do: {m.estimate, "#{megabytes(m.estimate)} in #{elem(duration(m.estimate_us * 1000), 1)}"}

  defp exact(%{memory: m}),
    do: {m.exact, "#{megabytes(m.exact)} in #{elem(duration(m.exact_us * 1000), 1)}"}

  defp estimate_speedup(%{memory: %{estimate_us: nil}}), do: {nil, "—"}

  defp estimate_speedup(%{memory: m}) do
    error = abs(m.estimate - m.exact) / max(m.exact, 1) * 100

    {m.exact_us / max(m.estimate_us, 1),
     "#{times(m.exact_us / max(m.estimate_us, 1))} faster, #{Float.round(error, 2)}% off"}
  end

  # The driver sizes the state while events flow (every 5 s on plain OTP, whose sizing
  # holds the guild for the copy of its state; every second otherwise).
  defp sized_during_run(%{memory_during_run: []}), do: {nil, "—"}

  defp sized_during_run(%{memory_during_run: times, memory_interval_s: every}) do
    longest = Enum.max(times) * 1000
    {longest, "#{length(times)} (every #{every} s), longest #{elem(duration(longest), 1)}"}
  end

  defp stalls(%{stalls: %{guild: guild, other: other}}),
    do: {length(guild), "#{length(guild)}, #{length(other)}"}

  defp drain_notes(results) do
    for %{label: label, drained: false} <- results,
        do: "#{label}: not every active session had the last event 60 s after the run"
  end

  defp stall_notes(results) do
    for %{label: label, stalls: %{other: other}} <- results, other != [] do
      causes =
        other
        |> Enum.frequencies_by(&elem(&1, 0))
        |> Enum.map_join(", ", fn {what, n} -> "#{what} ×#{n}" end)

      "#{label}: other processes over 5 ms: #{causes}"
    end
  end

  defp checked(%{checked: {matching, total}}), do: {matching, "#{matching} of #{total}"}

  defp percentile([], _q), do: nil

  defp percentile(samples, q) do
    sorted = Enum.sort(samples)
    Enum.at(sorted, min(length(sorted) - 1, trunc(q * length(sorted))))
  end

  defp duration(nil), do: {nil, "—"}
  defp duration(ns) when ns < 1_000, do: {ns, "#{ns} ns"}
  defp duration(ns) when ns < 1_000_000, do: {ns, "#{Float.round(ns / 1_000, 2)} µs"}
  defp duration(ns) when ns < 1_000_000_000, do: {ns, "#{Float.round(ns / 1_000_000, 2)} ms"}
  defp duration(ns), do: {ns, "#{Float.round(ns / 1_000_000_000, 2)} s"}

  defp rate(x), do: {x, format_int(round(x))}
  defp megabytes(bytes), do: "#{Float.round(bytes / 1_048_576, 1)} MB"

  defp format_int(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.replace(~r/(\d{3})(?=\d)/, "\\1,")
    |> String.reverse()
  end

  defp table(rows) do
    widths =
      rows
      |> Enum.zip_with(& &1)
      |> Enum.map(fn column -> column |> Enum.map(&String.length/1) |> Enum.max() end)

    line = fn cells ->
      cells
      |> Enum.zip(widths)
      |> Enum.map_join(" | ", fn {c, w} -> String.pad_trailing(c, w) end)
      |> then(&"| #{&1} |")
    end

    [
      line.(hd(rows)),
      line.(Enum.map(widths, &String.duplicate("-", &1))) | Enum.map(tl(rows), line)
    ]
    |> Enum.join("\n")
  end

  ## SVG

  @colors ["#2a7ab0", "#3a9a4a", "#d9822b"]

  # Latency histograms on a log scale, one series per toolkit.
  defp histogram(title, series) do
    all = series |> Enum.flat_map(&elem(&1, 1)) |> Enum.filter(&(&1 > 0))

    if all == [] do
      "<h2>#{escape(title)}</h2><p>No samples.</p>"
    else
      {low, high} = {:math.log10(Enum.min(all)), :math.log10(Enum.max(all)) + 0.01}
      buckets = 40
      width = 720
      height = 220

      bucket = fn ns ->
        min(buckets - 1, trunc((:math.log10(max(ns, 1)) - low) / (high - low) * buckets))
      end

      bars =
        series
        |> Enum.with_index()
        |> Enum.map_join(fn {{_label, samples}, i} ->
          counts = samples |> Enum.filter(&(&1 > 0)) |> Enum.frequencies_by(bucket)
          peak = counts |> Map.values() |> Enum.max(fn -> 1 end)

          Enum.map_join(counts, fn {b, count} ->
            bar_w = width / buckets / length(series)
            x = 40 + b * width / buckets + i * bar_w
            h = count / peak * (height - 20)

            ~s(<rect x="#{fmt(x)}" y="#{fmt(height - h)}" width="#{fmt(bar_w)}" height="#{fmt(h)}" fill="#{Enum.at(@colors, i)}"><title>#{count}</title></rect>)
          end)
        end)

      # Ticks at 1, 2 and 5 times each power of ten in range.
      ticks =
        for exponent <- (floor(low) - 1)..ceil(high)//1,
            step <- [1, 2, 5],
            at = :math.log10(step) + exponent,
            at >= low and at <= high do
          x = 40 + (at - low) / (high - low) * width

          ~s(<line x1="#{fmt(x)}" y1="#{height}" x2="#{fmt(x)}" y2="#{height + 5}" stroke="#333"/>) <>
            ~s(<text x="#{fmt(x)}" y="#{height + 18}" font-size="11" text-anchor="middle">#{elem(duration(round(:math.pow(10, at))), 1)}</text>)
        end

      """
      <h2>#{escape(title)}</h2>
      <svg xmlns="http://www.w3.org/2000/svg" width="#{width + 60}" height="#{height + 50}" role="img">
      <line x1="40" y1="#{height}" x2="#{width + 40}" y2="#{height}" stroke="#333"/>
      #{bars}#{Enum.join(ticks)}#{legend(series, width)}
      </svg>
      <p class="note">Log-scaled time; bar heights are relative to each series' largest bucket.</p>
      """
    end
  end

  defp legend(series, width, top \\ 0) do
    series
    |> Enum.with_index()
    |> Enum.map_join(fn {{label, _}, i} ->
      y = top + 12 + i * 16

      ~s(<rect x="#{width - 130}" y="#{y - 9}" width="10" height="10" fill="#{Enum.at(@colors, i)}"/>) <>
        ~s(<text x="#{width - 115}" y="#{y}" font-size="12">#{escape(label)}</text>)
    end)
  end

  # Bars for the figures where every toolkit has a number: log scale, so that 1,000×
  # differences stay readable.
  defp comparison([_ours | [_ | _]] = results) do
    rows =
      results
      |> figures()
      |> Enum.filter(fn {_name, values, ratios} ->
        Enum.all?(ratios, &(&1 != "")) and
          Enum.all?(values, &(is_number(elem(&1, 0)) and elem(&1, 0) > 0))
      end)

    step = 14 * length(results) + 8
    height = step * length(rows) + 60

    max_log =
      rows
      |> Enum.flat_map(fn {_, values, _} -> Enum.map(values, &:math.log10(elem(&1, 0))) end)
      |> Enum.max(fn -> 1 end)

    bars =
      rows
      |> Enum.with_index()
      |> Enum.map_join(fn {{name, values, ratios}, row} ->
        y = 10 + row * step

        label =
          ~s[<text x="0" y="#{y + 12}" font-size="12">#{escape(name)} (#{escape(Enum.join(ratios, ", "))})</text>]

        label <>
          (values
           |> Enum.with_index()
           |> Enum.map_join(fn {{value, text}, i} ->
             w = max(2, :math.log10(max(value, 1)) / max_log * 360)

             ~s(<rect x="330" y="#{y + i * 14}" width="#{fmt(w)}" height="12" fill="#{Enum.at(@colors, i)}"/>) <>
               ~s(<text x="#{fmt(336 + w)}" y="#{y + i * 14 + 10}" font-size="11">#{escape(text)}</text>)
           end))
      end)

    """
    <h2>#{escape(Enum.map_join(results, " against ", & &1.label))}</h2>
    <svg xmlns="http://www.w3.org/2000/svg" width="820" height="#{height}" role="img">#{bars}#{legend(Enum.map(results, &{&1.label, nil}), 460, height - 16 * length(results) - 12)}</svg>
    <p class="note">Log-scaled bars. For times lower is better; for rates higher is better.</p>
    """
  end

  defp comparison(_results), do: ""

  defp fmt(x), do: :erlang.float_to_binary(x / 1, decimals: 1)

  defp escape(text) do
    text
    |> to_string()
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
  end
end

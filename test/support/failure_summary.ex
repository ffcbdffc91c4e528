defmodule GuildKit.Test.FailureSummary do
  @moduledoc false
  # Lists every failed test again once the suite is over. The CLI formatter prints a
  # failure where it happens, which can be thousands of lines before the end, and CI logs
  # are often read from their tail. As a formatter it collects the failures; `print/0`,
  # run from `ExUnit.after_suite/1`, prints them after the CLI formatter has finished.

  use GenServer

  @key {__MODULE__, :failed}

  @impl true
  def init(_options), do: {:ok, []}

  @impl true
  def handle_cast({:test_finished, %ExUnit.Test{state: {:failed, failures}} = test}, failed) do
    {:noreply, [describe(test, failures) | failed]}
  end

  def handle_cast({:suite_finished, _times}, failed) do
    :persistent_term.put(@key, Enum.reverse(failed))
    {:noreply, failed}
  end

  def handle_cast(_event, failed), do: {:noreply, failed}

  @doc false
  def print do
    case :persistent_term.get(@key, []) do
      [] ->
        :ok

      failed ->
        IO.puts("Failed tests (#{length(failed)}):\n" <> Enum.join(failed, "\n"))
    end
  end

  defp describe(test, failures) do
    file = Path.relative_to_cwd(test.tags.file)

    "  #{inspect(test.module)} #{inspect(Atom.to_string(test.name))} (#{file}:#{test.tags.line})\n    " <>
      reason(failures)
  end

  defp reason([{_kind, %ExUnit.AssertionError{message: message}, _stack} | _]),
    do: first_line(message)

  defp reason([{kind, reason, stack} | _]),
    do: kind |> Exception.format_banner(reason, stack) |> first_line()

  defp first_line(text) do
    text |> String.split("\n", trim: true) |> List.first("") |> String.slice(0, 300)
  end
end

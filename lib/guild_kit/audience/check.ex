defmodule GuildKit.Audience.Check do
  # The checks of session arguments that GuildKit.Audience and GuildKit.Relay share:
  # the relay runs them in the guild, before the arguments travel to a relay, with the
  # messages the audience itself would give.
  @moduledoc false

  alias GuildKit.{Describe, Native}

  @max_u64 0xFFFF_FFFF_FFFF_FFFF

  @doc "Raises unless `role_ids` is a list."
  @spec role_ids!(term()) :: :ok
  def role_ids!(role_ids) when is_list(role_ids), do: :ok

  def role_ids!(other),
    do: raise(ArgumentError, "expected role ids to be a list, got: #{Describe.describe(other)}")

  @doc """
  Checks that a member id and role ids can be stored, as `GuildKit.Audience.add/5`
  would encode them, storing nothing; raises the native `ArgumentError` otherwise.
  """
  @spec ids!(term(), term()) :: :ok
  def ids!(member_id, role_ids) do
    role_ids!(role_ids)
    Native.audience_check_ids(member_id, role_ids)
  end

  @doc "The windows of a `:watch` option, checked."
  @spec windows!(term()) :: [GuildKit.Audience.window()]
  def windows!(windows), do: windows!(windows, windows, [])

  defp windows!([], _windows, acc), do: Enum.reverse(acc)

  defp windows!([window | rest], windows, acc),
    do: windows!(rest, windows, [window!(window) | acc])

  defp windows!(_improper, windows, _acc) do
    raise ArgumentError,
          "expected :watch to be a list of windows {first, last}, got: #{Describe.describe(windows)}"
  end

  @doc "One window `{first, last}`, checked."
  @spec window!(term()) :: GuildKit.Audience.window()
  def window!({first, last} = window)
      when is_integer(first) and is_integer(last) and first >= 0 and last >= first and
             last <= @max_u64,
      do: window

  def window!(other) do
    raise ArgumentError,
          "expected a window {first, last} of integers in 0..2^64-1 with first <= last, got: " <>
            Describe.describe(other)
  end
end

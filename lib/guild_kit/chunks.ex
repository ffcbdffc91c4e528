defmodule GuildKit.Chunks do
  # Results that native calls return in chunks, put back together: GuildKit.Permissions
  # and GuildKit.Audience export their maps this way.
  @moduledoc false

  @doc """
  Joins chunks of `{key, list}` entries in which an entry too big for one chunk
  continues in the next as `{:more, list}`.
  """
  @spec join([[{term(), list()}]]) :: [{term(), list()}]
  def join([single]), do: single

  def join(chunks) do
    chunks
    |> Enum.concat()
    |> Enum.reduce([], fn
      {:more, items}, [{key, parts} | entries] -> [{key, [items | parts]} | entries]
      {key, items}, entries -> [{key, [items]} | entries]
    end)
    |> Enum.reduce([], fn {key, parts}, entries ->
      [{key, parts |> Enum.reverse() |> Enum.concat()} | entries]
    end)
  end
end

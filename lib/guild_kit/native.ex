defmodule GuildKit.Native do
  # The only module that loads the NIF library. Every NIF in native/guild_kit_nif has a
  # stub here with the same name and arity; the stubs are replaced when the library loads.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:guild_kit), ~c"native/libguild_kit_nif")
    :erlang.load_nif(path, 0)
  end

  defp not_loaded, do: :erlang.nif_error(:nif_not_loaded)

  # GuildKit.SortedSet
  def sorted_set_new, do: not_loaded()
  def sorted_set_from_list(_list, _strictly_ascending), do: not_loaded()
  def sorted_set_add(_set, _term), do: not_loaded()
  def sorted_set_add_dirty(_set, _term), do: not_loaded()
  def sorted_set_remove(_set, _term), do: not_loaded()
  def sorted_set_remove_dirty(_set, _term), do: not_loaded()
  def sorted_set_find_index(_set, _term), do: not_loaded()
  def sorted_set_find_index_dirty(_set, _term), do: not_loaded()
  def sorted_set_at(_set, _index), do: not_loaded()
  def sorted_set_at_dirty(_set, _index), do: not_loaded()
  def sorted_set_slice(_set, _start, _amount), do: not_loaded()
  def sorted_set_slice_dirty(_set, _start, _amount), do: not_loaded()
  def sorted_set_size(_set), do: not_loaded()
  def sorted_set_read_only(_set), do: not_loaded()
  def sorted_set_snapshot(_set), do: not_loaded()
  def sorted_set_memory(_set), do: not_loaded()

  # GuildKit.Fanout
  def fanout_split(_receivers, _workers), do: not_loaded()
  def fanout_split_dirty(_receivers, _workers), do: not_loaded()
  def fanout_split_send(_receivers, _workers, _to, _payload), do: not_loaded()
  def fanout_split_send_more(_rest, _progress, _to, _payload), do: not_loaded()
  def fanout_check(_receivers, _position), do: not_loaded()
end

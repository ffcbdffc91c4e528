defmodule GuildKit.Native do
  # The only module that loads the NIF library. Every NIF in native/guild_kit_nif has a
  # stub here with the same name and arity; the stubs are replaced when the library loads.
  # A NIF that needs a dirty scheduler moves itself there (native/guild_kit_nif/src/
  # schedule.rs), so each has one stub.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:guild_kit), ~c"native/libguild_kit_nif")
    :erlang.load_nif(path, 0)
  end

  defp not_loaded, do: :erlang.nif_error(:nif_not_loaded)

  # GuildKit
  def native_memory, do: not_loaded()

  # GuildKit.SortedSet
  def sorted_set_new, do: not_loaded()
  def sorted_set_from_list(_list, _strictly_ascending), do: not_loaded()
  def sorted_set_add(_set, _term), do: not_loaded()
  def sorted_set_remove(_set, _term), do: not_loaded()
  def sorted_set_find_index(_set, _term), do: not_loaded()
  def sorted_set_at(_set, _index, _default), do: not_loaded()
  def sorted_set_slice(_set, _start, _amount), do: not_loaded()
  def sorted_set_slice_rest(_snapshot, _start, _stop, _tail), do: not_loaded()
  def sorted_set_size(_set), do: not_loaded()
  def sorted_set_read_only(_set), do: not_loaded()
  def sorted_set_snapshot(_set), do: not_loaded()
  def sorted_set_memory(_set), do: not_loaded()
  def sorted_set_to_binary(_set), do: not_loaded()
  def sorted_set_from_binary(_binary), do: not_loaded()

  # GuildKit.MemberList
  def member_list_new(_groups), do: not_loaded()
  def member_list_put(_list, _member_id, _group_id, _sort_key), do: not_loaded()
  def member_list_touch(_list, _member_id), do: not_loaded()
  def member_list_remove(_list, _member_id), do: not_loaded()
  def member_list_index_of(_list, _member_id), do: not_loaded()
  def member_list_watch(_list, _first, _last), do: not_loaded()
  def member_list_unwatch(_list, _first, _last), do: not_loaded()
  def member_list_rows(_list, _first, _last), do: not_loaded()
  def member_list_groups(_list), do: not_loaded()
  def member_list_size(_list), do: not_loaded()
  def member_list_member_count(_list), do: not_loaded()
  def member_list_memory(_list), do: not_loaded()
  def member_list_snapshot(_list), do: not_loaded()
  def member_list_to_binary(_list), do: not_loaded()
  def member_list_from_binary(_binary), do: not_loaded()
  def member_list_read_only(_list), do: not_loaded()
  def member_list_continue(_delivery, _position, _acc), do: not_loaded()

  # GuildKit.MemoryEstimator
  def memory_estimate(_term, _samples, _seed, _time_limit), do: not_loaded()
  def memory_exact(_term), do: not_loaded()
  def memory_confirm_layout(_funs, _sub_binaries, _maps), do: not_loaded()

  # GuildKit.Fanout
  def fanout_split(_receivers, _workers), do: not_loaded()
  def fanout_split_more(_rest, _progress), do: not_loaded()
  def fanout_partition(_batch, _workers), do: not_loaded()
  def fanout_remote_take(_remote), do: not_loaded()
  def fanout_batch_pids(_batch), do: not_loaded()
  def fanout_batch_done(_batch), do: not_loaded()
  def fanout_message(_term), do: not_loaded()
  def fanout_message_import(_packed), do: not_loaded()
  def fanout_message_export(_message, _pack), do: not_loaded()
  def fanout_deliver(_batch, _message), do: not_loaded()

  # GuildKit.Permissions
  def permissions_new(_everyone, _roles, _owner, _channels), do: not_loaded()
  def permissions_put_role(_perms, _role, _bits), do: not_loaded()
  def permissions_delete_role(_perms, _role), do: not_loaded()
  def permissions_put_everyone(_perms, _bits), do: not_loaded()
  def permissions_put_owner(_perms, _owner), do: not_loaded()
  def permissions_put_channel(_perms, _channel, _overwrites), do: not_loaded()
  def permissions_delete_channel(_perms, _channel), do: not_loaded()
  def permissions_compute(_perms, _member, _roles), do: not_loaded()
  def permissions_compute_channel(_perms, _member, _roles, _channel), do: not_loaded()
  def permissions_has_channel(_perms, _channel), do: not_loaded()
  def permissions_export(_perms), do: not_loaded()
  def permissions_export_next(_cursor), do: not_loaded()
  def permissions_info(_perms), do: not_loaded()

  # GuildKit.Audience
  def audience_new, do: not_loaded()
  def audience_add(_audience, _pid, _member, _roles, _active, _windows), do: not_loaded()
  def audience_update(_audience, _pid, _roles, _active, _windows), do: not_loaded()
  def audience_update_member(_audience, _member, _roles), do: not_loaded()
  def audience_check_ids(_member, _roles), do: not_loaded()
  def audience_remove(_audience, _pid), do: not_loaded()
  def audience_member(_audience, _pid), do: not_loaded()
  def audience_size(_audience), do: not_loaded()
  def audience_select(_audience, _perms, _filter, _forced, _sessions, _what), do: not_loaded()

  def audience_select_groups(_audience, _perms, _channels, _required, _sessions, _slice),
    do: not_loaded()

  def audience_to_list(_audience, _from_slot), do: not_loaded()
  def audience_groups_next(_cursor, _channels), do: not_loaded()
  def audience_memory(_audience), do: not_loaded()
  def audience_max_sessions, do: not_loaded()
end

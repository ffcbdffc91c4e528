//! Atoms shared by the adapters.

rustler::atoms! {
    ok,
    nil,
    // Returned by a normal-scheduler NIF whose input turned out too big to finish within
    // its budget; the Elixir wrapper then calls the `_dirty` twin. Never reaches users.
    guild_kit_dirty,
    // Returned by the fan-out split for a receiver that is neither a pid nor nil, with
    // its position; the Elixir wrapper raises an ArgumentError that shows the element.
    guild_kit_bad_receiver,
    // Returned by a fan-out NIF whose sender process is gone; the wrapper waits for its
    // supervisor to restart it and tries again.
    guild_kit_unsent,
    // Tags of the messages the fan-out NIFs send to a GuildKit.Fanout.Sender.
    guild_kit_fanout_split,
    // Returned by the fan-out check when it stopped at its budget, with the rest of the
    // list; the Elixir wrapper calls it again on the rest.
    guild_kit_more,
    struct_ = "__struct__",
    exception = "__exception__",
    message,
    argument_error = "Elixir.ArgumentError",
}

//! Atoms shared by the adapters.

rustler::atoms! {
    ok,
    error,
    nil,
    true_ = "true",
    // Returned by a normal-scheduler NIF whose input turned out too big to finish within
    // its budget; the Elixir wrapper then calls the `_dirty` twin. Never reaches users.
    guild_kit_dirty,
    struct_ = "__struct__",
    exception = "__exception__",
    message,
    argument_error = "Elixir.ArgumentError",
}

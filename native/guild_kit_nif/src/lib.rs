//! Rustler adapters for GuildKit. Each module mirrors one Elixir component and stays
//! thin: it decodes arguments, calls into `guild_kit_core`, and encodes results. The
//! Elixir side (`GuildKit.Native`) holds a stub for every NIF found here.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod allocator;
mod atoms;
mod audience;
mod dump;
mod error;
mod fanout;
mod member_list;
mod memory_estimator;
mod permissions;
// The one module with unsafe code: the NIF API calls rustler does not wrap, each with
// its `// SAFETY:` argument.
#[allow(unsafe_code)]
mod raw;
mod reaper;
mod schedule;
mod sorted_set;
mod term_codec;

rustler::init!("Elixir.GuildKit.Native");

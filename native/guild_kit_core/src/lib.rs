//! Pure-Rust cores of GuildKit. Nothing here knows about the BEAM: the NIF crate
//! (`guild_kit_nif`) walks Erlang terms and calls into these modules.
//!
//! - [`term_key`]: order-preserving byte keys for Erlang terms.
//! - [`key_tree`]: an order-statistic, copy-on-write B+tree of such keys.
//! - [`partition`]: bucket math for fan-out (which worker serves which receiver).

#![warn(missing_docs)]

pub mod key_tree;
pub mod partition;
pub mod term_key;

//! Pure-Rust cores of GuildKit. Nothing here knows about the BEAM: the NIF crate
//! (`guild_kit_nif`) walks Erlang terms and calls into these modules.
//!
//! - [`term_key`]: order-preserving byte keys for Erlang terms.
//! - [`key_tree`]: an order-statistic, copy-on-write B+tree of such keys.
//! - [`dump`]: the versioned binary format that moves a set or a member list between
//!   nodes and files.
//! - [`member_list`]: the grouped member sidebar with watched windows and their ops.
//! - [`size_model`]: the heap words of each kind of term, as `:erts_debug.flat_size/1`
//!   counts them, and OTP's hashmap trie.
//! - [`size_walk`]: sizes a whole term, exactly or by sampling, without recursion.
//! - [`partition`]: bucket math for fan-out (which worker serves which receiver).
//! - [`permissions`]: Discord's permission model (roles, overwrites), immutable values.
//! - [`audience`]: a relay's sessions and the per-channel answer to "who gets this
//!   event", cached.

#![warn(missing_docs)]

pub mod audience;
pub mod dump;
pub mod key_tree;
pub mod member_list;
pub mod partition;
pub mod permissions;
pub mod size_model;
pub mod size_walk;
pub mod term_key;

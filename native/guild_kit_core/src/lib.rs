//! Pure-Rust cores of GuildKit. Nothing here knows about the BEAM: the NIF crate
//! (`guild_kit_nif`) walks Erlang terms and calls into these modules.
//!
//! - [`term_key`]: order-preserving byte keys for Erlang terms.
//! - [`key_tree`]: an order-statistic, copy-on-write B+tree of such keys.
//! - [`member_list`]: the grouped member sidebar with watched windows and their ops.

#![warn(missing_docs)]

pub mod key_tree;
pub mod member_list;
pub mod term_key;

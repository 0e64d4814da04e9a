//! The subcommands of the `pecd` binary: argument types and thin glue into the library.
//! Each file owns one subcommand; errors are reported with context (anyhow) here, at the edge.

pub mod evidence;
pub mod index;
pub mod init;
pub mod log;
pub mod mailbox;
pub mod owner;
pub mod serve;
pub mod store;
pub mod verify;

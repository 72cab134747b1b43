//! The integration harness: real projects on disk, DataFusion on real files, the sandbox over real HTTP.

mod cli;
mod common;
mod connector;
mod daemon;
mod kill;
mod models;
mod sync;

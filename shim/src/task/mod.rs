//! The Task API: the ttrpc glue (`api`), the service that maps each RPC
//! onto containers (`service`, `cgroup_rpcs`, `exec_rpcs` with the table's
//! `exec_entry`), and the one lifecycle table every RPC goes through
//! (`lifecycle`). The RPC modules use the service, never the other way.

mod api;
mod cgroup_rpcs;
mod exec_entry;
mod exec_rpcs;
pub mod lifecycle;
mod service;

pub use service::{Service, timestamp};

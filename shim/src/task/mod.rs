//! The Task API: the ttrpc glue (`api`), the service that maps each RPC
//! onto containers (`service`, `cgroup_rpcs`), and the one lifecycle table
//! every RPC goes through (`lifecycle`).

mod api;
mod cgroup_rpcs;
mod exec_rpcs;
pub mod lifecycle;
mod service;

pub use service::{Service, timestamp};

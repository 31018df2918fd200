//! One ticket's way once DMS has its zip ready: download, extract, publish, upload, hooks.
//!
//! Nothing here decides *when* a ticket runs or writes ticket state: `watch` does both and
//! hands each job what it needs.

pub mod archive;
pub mod download;
pub mod extract;
pub mod hooks;
pub mod limit;
pub mod pipeline;
pub mod upload;

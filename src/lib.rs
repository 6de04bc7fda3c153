//! grpm: a gRPC process manager.
//!
//! Module map (dependencies point down this list):
//!
//! - [`cli`]: the `grpm` command line (clap), output rendering, app files.
//! - [`client`]: connects to an agent (unix socket), spawning a local one when none answers.
//! - [`agent`]: the daemon: home directory, socket security, the gRPC server.
//! - [`rpc`]: generated protobuf code, proto ⇄ model conversion, the service, error mapping.
//! - [`supervisor`]: the process table, one owner task per app, process trees, persistence.
//! - [`model`]: domain types shared by all of the above; no gRPC, no syscalls.
//! - [`home`]: the paths under `GRPM_HOME`.

pub mod agent;
pub mod cli;
pub mod client;
pub mod home;
pub mod model;
pub mod rpc;
pub mod supervisor;

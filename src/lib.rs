//! grpm: a gRPC process manager.
//!
//! Module map (dependencies point down this list):
//!
//! - [`cli`]: the `grpm` command line (clap), output rendering, app files; talks to agents only
//!   through [`client`], in model types.
//! - [`client`]: typed calls to an agent in model types, with errors as values; connects to the
//!   local one (unix socket, spawned when none answers) or a remote one (TCP, TLS, token).
//! - [`agent`]: the daemon: home directory, socket security, the gRPC servers (unix socket;
//!   TCP with TLS and client authentication), its own log (never blocking, rotated, SIGHUP),
//!   the Prometheus endpoint (`agent::metrics`), and readiness to systemd (`agent::sdnotify`).
//! - [`rpc`]: generated protobuf code and its codec, proto ⇄ model conversion, the service,
//!   error mapping.
//! - [`supervisor`]: the process table; each app's life is one pure state machine
//!   (`lifecycle::machine`) fed by one owner task per app; process trees and their sampled
//!   usage, persistence, events, logs. Its submodules are private behind its API.
//! - [`model`]: domain types shared by all of the above; no gRPC, no syscalls.
//! - [`certs`]: `grpm tls init`, the certificates for mutual TLS.
//! - [`hosts`]: remote agents by name (`$GRPM_HOME/hosts.toml`) and the `--host` syntax.
//! - [`keeper`]: the process that owns the agent and outlives it (no runtime, no gRPC): holds
//!   the apps' pipes and sockets, reaps orphaned apps, hands everything to the next agent; and
//!   the agent's side of their socket pair.
//! - [`home`]: the paths under `GRPM_HOME`, and `write_atomic` for the files in it.

pub mod agent;
pub mod certs;
pub mod cli;
pub mod client;
pub mod home;
pub mod hosts;
pub mod keeper;
pub mod model;
pub mod rpc;
pub mod supervisor;

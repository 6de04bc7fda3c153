//! Integration tests: the real agent and CLI, driven as a user would.

mod common;

mod agent;
mod appfile;
mod autorestart;
mod concurrency;
mod depends;
mod environment;
mod events;
mod faults;
mod grpcurl;
mod input;
mod instances;
mod logs;
mod observe;
mod persistence;
mod ready;
mod remote;
mod run_as;
mod security;
mod tree;
mod triggers;

//! Integration tests: the real agent and CLI, driven as a user would.

mod common;

mod agent;
mod appfile;
mod apply;
mod autorestart;
mod buf;
mod concurrency;
mod day_one;
mod depends;
mod environment;
mod events;
mod faults;
mod grpcio;
mod grpcurl;
mod import;
mod input;
mod instances;
mod keeper;
mod logs;
mod observe;
mod persistence;
mod readme;
mod ready;
mod remote;
mod run_as;
mod security;
mod tree;
mod triggers;

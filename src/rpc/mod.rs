//! The gRPC edge: the only module that sees generated code.

pub mod codec;
pub mod convert;
pub mod error;
pub mod logstream;
pub mod service;

/// Generated from `proto/grpm/v1/grpm.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("grpm.v1");

    /// The encoded descriptor set, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/grpm_descriptor.bin"));
}

/// How an authenticated TCP caller proved who it is ("client certificate", "token"): put in
/// the request's extensions by the agent's auth layer, named in the events it causes.
#[derive(Debug, Clone, Copy)]
pub struct Principal(pub &'static str);

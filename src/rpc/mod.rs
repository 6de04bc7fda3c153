//! The gRPC edge: the only module that sees generated code.

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

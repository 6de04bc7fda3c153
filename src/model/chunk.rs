//! Pieces of an app's captured output as a reader receives them, and the positions a reader
//! resumes from. Offsets count the bytes of one stream of one app since its first output, never
//! reset (not by rotation, restarts or flush).

use super::{AppId, LogStream};

/// A piece of one stream of one app's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub app: String,
    pub app_id: AppId,
    /// The instance that wrote it.
    pub instance: u32,
    pub stream: LogStream,
    /// Whole lines where possible.
    pub data: Vec<u8>,
    /// The logical offset of `data`'s first byte.
    pub offset: u64,
    /// Bytes skipped just before `offset` because they were no longer on disk.
    pub skipped: u64,
}

/// Where to resume one stream of one app: the offset after the last byte received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub app_id: AppId,
    pub instance: u32,
    pub stream: LogStream,
    pub offset: u64,
}

//! Captured output: each app's stdout and stderr come through pipes the agent reads
//! ([`capture`]), into files under `logs/` ([`writer`]) that rotate by size at line boundaries
//! ([`rotate`], [`lines`]), and that readers tail and follow ([`tail`]).

mod capture;
mod lines;
mod rotate;
mod tail;
mod writer;

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

pub use capture::{Capture, WriterPool};
pub use tail::{Piece, ReadFrom};
pub use writer::StreamLog;

use crate::model::{validate_name, AppId, LogPolicy, LogStream};

/// `logs/<id>-<name>.<out|err>.log` (instance 0: the only one of most apps, so the name is the
/// one apps had before instances) or `logs/<id>-<name>-<instance>.<out|err>.log`, built only
/// from a valid name (which cannot hold `/` or start with `.`); anything else is refused, so no
/// name can steer a path out of `dir`.
pub fn log_path(
    dir: &Path,
    id: AppId,
    name: &str,
    instance: u32,
    stream: LogStream,
) -> Result<PathBuf, String> {
    validate_name(name)?;
    let file = if instance == 0 {
        format!("{id}-{name}.{}.log", stream.word())
    } else {
        format!("{id}-{name}-{instance}.{}.log", stream.word())
    };
    let mut parts = Path::new(&file).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Ok(dir.join(file)),
        _ => Err(format!("{name:?} cannot name a log file")),
    }
}

/// The log file paths of an instance; an invalid stored name (a hand-edited state.json) falls
/// back to the id alone.
pub fn paths(dir: &Path, id: AppId, name: &str, instance: u32, stream: LogStream) -> PathBuf {
    log_path(dir, id, name, instance, stream).unwrap_or_else(|_| {
        if instance == 0 {
            dir.join(format!("{id}.{}.log", stream.word()))
        } else {
            dir.join(format!("{id}-{instance}.{}.log", stream.word()))
        }
    })
}

/// Both logs of one app. Lives as long as the app (across restarts of its processes).
pub struct AppLogs {
    pub out: Arc<StreamLog>,
    pub err: Arc<StreamLog>,
}

impl AppLogs {
    pub fn new(dir: &Path, id: AppId, name: &str, instance: u32, policy: LogPolicy) -> AppLogs {
        let one = |s: LogStream| {
            let path = paths(dir, id, name, instance, s);
            let offset = path.with_extension("offset");
            Arc::new(StreamLog::new(path, offset, policy))
        };
        AppLogs {
            out: one(LogStream::Out),
            err: one(LogStream::Err),
        }
    }

    /// One stream's output as pieces: from `from`, then (when `follow`) as it grows, until the
    /// log closes. The log is watched before this returns, so nothing written after is missed.
    pub fn pieces(
        &self,
        s: LogStream,
        from: ReadFrom,
        follow: bool,
    ) -> impl futures_util::Stream<Item = std::io::Result<Piece>> + Send {
        tail::pieces(self.get(s).clone(), from, follow)
    }

    pub fn get(&self, s: LogStream) -> &Arc<StreamLog> {
        match s {
            LogStream::Out => &self.out,
            LogStream::Err => &self.err,
        }
    }

    /// New rotation and timestamp settings for both streams (see `StreamLog::set_policy`).
    pub fn set_policy(&self, policy: LogPolicy) {
        self.out.set_policy(policy);
        self.err.set_policy(policy);
    }

    /// Blocking.
    pub fn flush(&self) -> std::io::Result<()> {
        self.out.flush()?;
        self.err.flush()
    }

    /// Blocking.
    pub fn purge(&self) -> std::io::Result<()> {
        self.out.purge()?;
        self.err.purge()
    }

    pub fn close(&self) {
        self.out.close();
        self.err.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_cannot_leave_the_logs_directory() {
        let dir = Path::new("/home/u/.grpm/logs");
        assert_eq!(
            log_path(dir, 7, "web.v2_a-b", 0, LogStream::Out).unwrap(),
            dir.join("7-web.v2_a-b.out.log")
        );
        assert_eq!(
            log_path(dir, 7, "web", 2, LogStream::Err).unwrap(),
            dir.join("7-web-2.err.log")
        );
        for bad in [
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            ".hidden",
            "",
            "a\0b",
            "a b",
            "x/../../y",
        ] {
            assert!(
                log_path(dir, 1, bad, 0, LogStream::Err).is_err(),
                "{bad:?} was accepted"
            );
            let p = paths(dir, 1, bad, 0, LogStream::Err);
            assert_eq!(p.parent(), Some(dir), "{bad:?} gave {}", p.display());
            assert_eq!(p, dir.join("1.err.log"));
        }
    }
}

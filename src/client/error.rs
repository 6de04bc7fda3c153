//! What can go wrong talking to an agent, as values: the gRPC code of a refused or failed call,
//! whether a transport failure means the connection was dropped, or which step of connecting
//! failed. Callers decide on these, never on the text, which is for people.

use std::{error::Error as StdError, io, path::PathBuf};

pub use tonic::Code;

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no agent answers on {0}")]
    NoAgent(PathBuf),
    #[error("cannot start an agent: {0}")]
    Spawn(String),
    #[error("{0}")]
    Home(String),
    /// A remote agent could not be reached or its credentials could not be read. `dropped`:
    /// the agent (or something on the way) closed or refused the connection once made, as a TLS
    /// agent does to a plaintext client.
    #[error("{message}")]
    Remote { message: String, dropped: bool },
}

/// A call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The agent refused or failed the call (`transport` unset), or the connection failed
    /// during it (`transport` set).
    #[error("{message}")]
    Call {
        code: Code,
        message: String,
        transport: Option<Transport>,
    },
    /// The agent's answer could not be read (an agent of another version?).
    #[error("the agent sent {0}")]
    Malformed(String),
}

/// How a connection failed under a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Closed, reset or refused by the other end (or a TLS alert, or bytes that were not
    /// HTTP/2): often a TLS agent and a client without TLS, or the reverse.
    Dropped,
    /// Any other failure (a timeout, a name that does not resolve, ...).
    Other,
}

impl Error {
    /// The gRPC code of a failed call; `None` when no call was made (connecting failed) or the
    /// answer was unreadable.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Call { code, .. } => Some(*code),
            Error::Connect(_) | Error::Malformed(_) => None,
        }
    }

    /// True when the connection was dropped by the other end, connecting or during a call.
    pub fn dropped(&self) -> bool {
        matches!(
            self,
            Error::Call {
                transport: Some(Transport::Dropped),
                ..
            } | Error::Connect(ConnectError::Remote { dropped: true, .. })
        )
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Error {
        let mut message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        // A transport failure's status says "transport error"; the cause (a TLS alert, a
        // reset connection) is in its sources. An agent's own answer has none.
        let source = StdError::source(&s);
        if let Some(src) = source {
            let detail = chain(src);
            if !message.contains(&detail) {
                message = format!("{message}: {detail}");
            }
            // Layers repeat each other ("http2 error: http2 error: ..."): say each thing once.
            let mut parts: Vec<&str> = Vec::new();
            for p in message.split(": ") {
                if parts.last() != Some(&p) {
                    parts.push(p);
                }
            }
            message = parts.join(": ");
        }
        Error::Call {
            code: s.code(),
            message,
            transport: source.map(|e| {
                if dropped(e) {
                    Transport::Dropped
                } else {
                    Transport::Other
                }
            }),
        }
    }
}

/// An error with its causes, "a: b: c", without the repetitions tonic's layers add.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        "transport error".into()
    } else {
        parts.join(": ")
    }
}

/// Whether `e` (or one of its causes) says the other end closed, reset or refused the
/// connection: a closed or reset socket, a canceled or incomplete HTTP exchange, an HTTP/2
/// protocol or frame-size error (bytes that were not HTTP/2, such as a TLS record), or a TLS
/// alert.
pub(crate) fn dropped(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
            // io::Error's source() skips the error it wraps (a TLS error, say): look at it.
            if let Some(inner) = io.get_ref() {
                if dropped(inner) {
                    return true;
                }
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_canceled() || h.is_closed() || h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(h) = err.downcast_ref::<h2::Error>() {
            let bad_frames = matches!(
                h.reason(),
                Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::FRAME_SIZE_ERROR)
            );
            if bad_frames || h.is_go_away() || h.is_io() {
                return true;
            }
        }
        if let Some(rustls::Error::AlertReceived(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_answer_is_not_a_transport_failure() {
        let e = Error::from(tonic::Status::not_found("no app matches \"x\""));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert!(!e.dropped());
        assert_eq!(e.to_string(), "no app matches \"x\"");
        let e = Error::from(tonic::Status::new(Code::Internal, ""));
        assert_eq!(e.to_string(), "Internal");
    }

    #[test]
    fn resets_and_alerts_are_drops_refusals_are_not() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(dropped(&reset));
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        );
        assert!(dropped(&alert));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(!dropped(&refused));
    }
}

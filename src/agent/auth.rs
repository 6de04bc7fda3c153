//! Client authentication on the TCP listener: a tower layer in front of every service
//! (ProcessManager, health and reflection alike), so an unauthenticated caller learns nothing
//! and changes nothing. It checks the bearer token (in constant time) and/or that the TLS
//! handshake verified a client certificate, and tells the service who the caller is.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use subtle::ConstantTimeEq;
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::listen::ConnInfo;
use crate::rpc::Principal;

/// A bearer token. Its `Debug` never shows it, so it cannot end up in a log.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    pub fn new(bytes: Vec<u8>) -> Token {
        Token(bytes.into())
    }

    /// Constant-time comparison (the length of a wrong guess is the only thing it can learn).
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        bool::from(self.0.as_ref().ct_eq(presented))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a TCP caller must present. Every configured check must pass.
#[derive(Debug, Clone)]
pub struct Policy {
    pub token: Option<Token>,
    /// The TLS handshake must have verified a client certificate against `--tls-client-ca`.
    pub require_cert: bool,
}

impl Policy {
    /// Checks one request; the error is the message of the UNAUTHENTICATED status.
    fn check<B>(&self, req: &http::Request<B>) -> Result<Principal, &'static str> {
        if self.require_cert {
            let verified = req
                .extensions()
                .get::<TlsConnectInfo<ConnInfo>>()
                .and_then(|i| i.peer_certs())
                .is_some_and(|certs| !certs.is_empty());
            if !verified {
                return Err("a client certificate signed by the agent's client CA is required");
            }
        }
        if let Some(token) = &self.token {
            let presented = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if !presented.is_some_and(|p| token.matches(p)) {
                return Err("a valid bearer token is required (authorization: Bearer TOKEN)");
            }
        }
        Ok(Principal(match (self.require_cert, self.token.is_some()) {
            (true, true) => "client certificate and token",
            (true, false) => "client certificate",
            _ => "token",
        }))
    }
}

/// What a caller must present, as one word for the agent's log: `client-certificate`,
/// `token`, `client-certificate+token`, or `none` (a loopback listener without either).
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.require_cert, self.token.is_some()) {
            (true, true) => "client-certificate+token",
            (true, false) => "client-certificate",
            (false, true) => "token",
            (false, false) => "none",
        })
    }
}

/// Puts [`Auth`] in front of a service.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<Policy>);

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            policy: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, B, R> Service<http::Request<B>> for Auth<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The listener's view of the connection (under TLS or not); the service reads the
        // peer's address from a plain `TcpConnectInfo`, as tonic provides it.
        let conn = req.extensions().get::<ConnInfo>().cloned().or_else(|| {
            req.extensions()
                .get::<TlsConnectInfo<ConnInfo>>()
                .map(|i| i.get_ref().clone())
        });
        if let Some(c) = &conn {
            req.extensions_mut().insert::<TcpConnectInfo>(c.tcp.clone());
        }
        match self.policy.check(&req) {
            Ok(who) => {
                if let Some(c) = &conn {
                    c.prove();
                }
                req.extensions_mut().insert(who);
                futures_util::future::Either::Left(self.inner.call(req))
            }
            Err(why) => {
                let peer = conn.as_ref().and_then(|c| c.tcp.remote_addr());
                match &conn {
                    // Rate-limited: a flood of bad requests writes a summary, not a line each.
                    Some(c) => c.gate().auth_failed(peer, req.uri().path(), why),
                    None => tracing::warn!(
                        ?peer,
                        path = %req.uri().path(),
                        why,
                        "unauthenticated request refused"
                    ),
                }
                futures_util::future::Either::Right(std::future::ready(Ok(tonic::Status::from(
                    crate::rpc::error::Error::Unauthenticated(why),
                )
                .into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/grpm.v1.ProcessManager/List");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn token_checks() {
        let p = Policy {
            token: Some(Token::new(b"s3cret-s3cret-s3cret".to_vec())),
            require_cert: false,
        };
        assert!(p.check(&req(Some("Bearer s3cret-s3cret-s3cret"))).is_ok());
        assert!(p.check(&req(Some("Bearer s3cret-s3cret-s3cre"))).is_err());
        assert!(p.check(&req(Some("s3cret-s3cret-s3cret"))).is_err());
        assert!(p.check(&req(Some("bearer s3cret-s3cret-s3cret"))).is_err());
        assert!(p.check(&req(None)).is_err());
        assert!(!format!("{p:?}").contains("s3cret"));
    }

    #[test]
    fn certificate_required_means_a_verified_one() {
        let p = Policy {
            token: None,
            require_cert: true,
        };
        // No TLS connect info at all (plaintext): refused.
        assert!(p.check(&req(None)).is_err());
    }
}

//! Connecting to a remote agent over TCP: TLS with the host's CA (and client certificate), a
//! bearer token when the host has one, a connect timeout, a per-request deadline, and HTTP/2
//! keepalive so that a vanished agent is noticed on long streams.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{
    error::{chain, dropped},
    Client, ConnectError, Credentials,
};
use crate::hosts::Host;

/// How long connecting and each request may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// Each unary call, until its answer (streams are watched by keepalive instead).
    pub request: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request: Some(Duration::from_secs(60)),
        }
    }
}

/// Connects to `host`. Errors say where, when the caller's label for the host ("box1: ") does
/// not already say it, and why (refused, timed out, a TLS failure, an unreadable certificate).
pub async fn connect_remote(host: &Host, t: &Timeouts) -> Result<Client, ConnectError> {
    let at = if host.label == host.address {
        String::new()
    } else {
        format!("{}: ", host.address)
    };
    let fail = |why: String| ConnectError::Remote {
        message: format!("{at}{why}"),
        dropped: false,
    };
    let credentials = match &host.token_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| fail(format!("token_file {}: {e}", p.display())))?;
            Credentials::bearer(text.trim())
                .map_err(|e| fail(format!("token_file {}: {e}", p.display())))?
        }
        None => Credentials::default(),
    };
    let scheme = if host.ca.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", host.address))
        .map_err(|e| fail(format!("not a usable address: {e}")))?
        .connect_timeout(t.connect)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if let Some(d) = t.request {
        endpoint = endpoint.timeout(d);
    }
    if let Some(ca) = &host.ca {
        let read = |p: &std::path::Path, what: &str| {
            std::fs::read(p).map_err(|e| fail(format!("{what} {}: {e}", p.display())))
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca, "ca")?))
            .domain_name(
                host.server_name
                    .clone()
                    .unwrap_or_else(|| host.host_part().to_string()),
            )
            .timeout(t.connect);
        if let (Some(cert), Some(key)) = (&host.cert, &host.key) {
            tls = tls.identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| fail(format!("TLS setup: {}", chain(&e))))?;
    }
    // Name resolution is not covered by connect_timeout: bound the whole connection.
    let channel = match tokio::time::timeout(t.connect + t.connect, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(ConnectError::Remote {
                message: format!("{at}{}", chain(&e)),
                dropped: dropped(&e),
            })
        }
        Err(_) => {
            return Err(fail(format!(
                "no connection within {}",
                crate::model::format_duration(t.connect + t.connect)
            )))
        }
    };
    Ok(Client::new(channel, credentials))
}

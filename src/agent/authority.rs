//! Lets stock gRPC clients in over the unix socket: the `:authority` they send there is rewritten
//! to `localhost` before the HTTP/2 server sees it.
//!
//! Over a unix socket the authority names nothing (the socket path already says where the agent
//! is), but clients fill it in anyway: grpcio (C core, since 1.57) sends the socket path
//! percent-encoded (`tmp%2Fh%2Fagent.sock`), grpc-java and grpcurl the path as it is
//! (`/tmp/h/agent.sock`). Neither is a valid URI authority, and the server's HTTP/2 layer (h2,
//! below hyper and tonic) refuses such a request in `server::Peer::convert_poll_message`
//! (`malformed headers: malformed authority`) by resetting the stream with `PROTOCOL_ERROR`,
//! before hyper or tonic see it; h2 has no option to relax that (hyperium/h2#487, open). grpc-go's
//! `unix:` targets and grpc-node send `localhost`, which passes.
//!
//! So each unix-socket connection is read through [`FixAuthority`]: it follows the HTTP/2 frames
//! the client sends, decodes every header block with its own HPACK decoder (the client's dynamic
//! table lives there), replaces an `:authority` that is not a valid authority with `localhost`,
//! and hands the block to h2 re-encoded as literals without indexing (so h2's own table stays
//! empty and in step). Every other frame passes through unchanged, byte for byte; what the server
//! writes is not touched. A connection that does not start with the HTTP/2 preface is passed
//! through as it is. The TCP listener does not use it: TLS clients send a real host name.
//!
//! A request h2 will still refuse (no `:method`, a malformed `:path`...) is logged at debug level
//! with the reason, since h2 only says so in its own debug lines.

use std::{
    borrow::Cow,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What the client sends first on an HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What an authority that is not one becomes.
const LOCALHOST: &[u8] = b"localhost";
/// The frame size every HTTP/2 peer accepts (h2's default, which tonic keeps): larger frames
/// are passed on untouched for h2 to refuse, and re-encoded blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// The largest header block gathered (HEADERS and its CONTINUATIONs): far above what h2
/// accepts once decoded (16 KiB of headers), so only a hostile client meets it.
const MAX_BLOCK: usize = 256 * 1024;
/// The HPACK dynamic table size the server allows its clients (the protocol's default: the
/// server never advertises another).
const TABLE_SIZE: usize = 4096;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Where the reader is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface seen so far.
    Preface(usize),
    /// Frame by frame.
    Frames,
    /// Not HTTP/2, or a frame this layer leaves for h2 to refuse: everything passes unchanged.
    Passthrough,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream: u32,
    end_stream: bool,
    /// The HEADERS frame's priority fields (5 bytes), when it had them.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// A connection's client-to-server bytes with the `:authority` made valid (see the module
/// docs); writes go straight through.
pub struct FixAuthority<S> {
    inner: S,
    state: State,
    /// Read from `inner`, not yet looked at.
    input: BytesMut,
    /// Ready for the HTTP/2 server.
    output: BytesMut,
    /// Bytes of the current frame's payload still to pass through unchanged.
    pass: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    eof: bool,
    /// A rewritten authority was logged already (once per connection is enough).
    logged: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        FixAuthority {
            inner,
            state: State::Preface(0),
            input: BytesMut::new(),
            output: BytesMut::new(),
            pass: 0,
            block: None,
            decoder,
            eof: false,
            logged: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.state {
                State::Passthrough => {
                    let all = self.input.split();
                    self.output.unsplit(all);
                    return Ok(());
                }
                State::Preface(seen) => {
                    let want = &PREFACE[seen..];
                    let n = want.len().min(self.input.len());
                    if n == 0 {
                        return Ok(());
                    }
                    let matches = self.input[..n] == want[..n];
                    let bytes = self.input.split_to(n);
                    self.output.unsplit(bytes);
                    self.state = match (matches, seen + n == PREFACE.len()) {
                        (false, _) => State::Passthrough,
                        (true, true) => State::Frames,
                        (true, false) => State::Preface(seen + n),
                    };
                }
                State::Frames => {
                    if self.pass > 0 {
                        let n = self.pass.min(self.input.len());
                        if n == 0 {
                            return Ok(());
                        }
                        let bytes = self.input.split_to(n);
                        self.output.unsplit(bytes);
                        self.pass -= n;
                        continue;
                    }
                    if self.input.len() < 9 {
                        return Ok(());
                    }
                    let len = usize::from(self.input[0]) << 16
                        | usize::from(self.input[1]) << 8
                        | usize::from(self.input[2]);
                    let kind = self.input[3];
                    let in_block = self.block.is_some();
                    let header_frame = kind == HEADERS || (kind == CONTINUATION && in_block);
                    if !header_frame || len > MAX_FRAME {
                        if in_block {
                            // A header block interrupted: h2 would end the connection.
                            return Err(invalid("a header block interrupted by another frame"));
                        }
                        if len > MAX_FRAME && header_frame {
                            self.state = State::Passthrough;
                            continue;
                        }
                        let head = self.input.split_to(9);
                        self.output.unsplit(head);
                        self.pass = len;
                        continue;
                    }
                    if self.input.len() < 9 + len {
                        return Ok(());
                    }
                    let frame = self.input.split_to(9 + len);
                    self.header_frame(&frame)?;
                }
            }
        }
    }

    /// Takes one HEADERS or CONTINUATION frame (whole); at the block's end, emits it rewritten.
    fn header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[9..];
        if kind == HEADERS {
            if flags & PADDED != 0 {
                let Some((&pad, rest)) = payload.split_first() else {
                    return Err(invalid("a padded HEADERS frame without its pad length"));
                };
                let Some(keep) = rest.len().checked_sub(usize::from(pad)) else {
                    return Err(invalid("a HEADERS frame's padding longer than the frame"));
                };
                payload = &rest[..keep];
            }
            let priority = if flags & PRIORITY != 0 {
                let Some((p, rest)) = payload.split_first_chunk::<5>() else {
                    return Err(invalid("a HEADERS frame too short for its priority"));
                };
                payload = rest;
                Some(*p)
            } else {
                None
            };
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: Vec::new(),
            });
        }
        let Some(block) = self.block.as_mut() else {
            return Err(invalid("a CONTINUATION frame outside a header block"));
        };
        if stream != block.stream {
            return Err(invalid("a CONTINUATION frame on another stream"));
        }
        if block.fragment.len() + payload.len() > MAX_BLOCK {
            return Err(invalid("a header block larger than 256 KiB"));
        }
        block.fragment.extend_from_slice(payload);
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let block = self.block.take().expect("checked above");
        let encoded = self.rewrite(&block)?;
        emit_headers(&mut self.output, &block, &encoded);
        Ok(())
    }

    /// Decodes a whole block and re-encodes it, the authority fixed.
    fn rewrite(&mut self, block: &Block) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.fragment.len() * 2);
        let mut pseudo = Pseudo::default();
        let logged = &mut self.logged;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value = match &*name {
                    b":authority" => fix_authority(block.stream, value, logged),
                    _ => value,
                };
                pseudo.note(&name, &value);
                encode_literal(&mut out, &name, &value);
            })
            .map_err(|e| invalid(&format!("an undecodable header block ({e})")))?;
        if let Some(reason) = pseudo.refusal() {
            tracing::debug!(
                stream = block.stream,
                %reason,
                "unix socket: the HTTP/2 layer will refuse this request (RST_STREAM PROTOCOL_ERROR)"
            );
        }
        Ok(out)
    }
}

/// `value` when it is a valid authority, else `localhost` (logged at debug level, the first time
/// on a connection).
fn fix_authority<'v>(stream: u32, value: Cow<'v, [u8]>, logged: &mut bool) -> Cow<'v, [u8]> {
    match http::uri::Authority::try_from(&*value) {
        Ok(_) => value,
        Err(_) if *logged => Cow::Borrowed(LOCALHOST),
        Err(e) => {
            *logged = true;
            tracing::debug!(
                stream,
                authority = %String::from_utf8_lossy(&value),
                reason = %e,
                "unix socket: not a valid :authority; served as localhost"
            );
            Cow::Borrowed(LOCALHOST)
        }
    }
}

/// The request's pseudo-headers, checked as h2 checks them (`server::Peer::convert_poll_message`)
/// so that a refused request is logged with its reason.
#[derive(Default)]
struct Pseudo {
    method: Option<Vec<u8>>,
    scheme: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    status: bool,
    /// A header block with no pseudo-header is trailers, never refused for missing ones.
    any: bool,
}

impl Pseudo {
    fn note(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => self.method = Some(value.to_vec()),
            b":scheme" => self.scheme = Some(value.to_vec()),
            b":path" => self.path = Some(value.to_vec()),
            b":status" => self.status = true,
            _ => return,
        }
        self.any = true;
    }

    fn refusal(&self) -> Option<String> {
        if !self.any {
            return None;
        }
        let Some(method) = &self.method else {
            return Some("no :method".into());
        };
        if http::Method::from_bytes(method).is_err() {
            return Some(format!(
                "malformed :method {:?}",
                String::from_utf8_lossy(method)
            ));
        }
        if self.status {
            return Some(":status in a request".into());
        }
        let connect = method == b"CONNECT";
        match &self.scheme {
            None if !connect => return Some("no :scheme".into()),
            Some(s) if http::uri::Scheme::try_from(&s[..]).is_err() => {
                return Some(format!(
                    "malformed :scheme {:?}",
                    String::from_utf8_lossy(s)
                ))
            }
            _ => {}
        }
        match &self.path {
            Some(p) if p.is_empty() => Some("empty :path".into()),
            Some(p) if http::uri::PathAndQuery::try_from(&p[..]).is_err() => {
                Some(format!("malformed :path {:?}", String::from_utf8_lossy(p)))
            }
            _ => None,
        }
    }
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    encode_string(out, name);
    encode_string(out, value);
}

/// A string literal: its length as a 7-bit-prefix integer (RFC 7541 §5.1), then the bytes.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// A HEADERS frame (with the block's END_STREAM and priority) and as many CONTINUATION frames as
/// `encoded` needs, none above [`MAX_FRAME`].
fn emit_headers(out: &mut BytesMut, block: &Block, encoded: &[u8]) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let first = encoded.len().min(MAX_FRAME - prio_len);
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(out, prio_len + head.len(), HEADERS, flags, block.stream);
    if let Some(p) = block.priority {
        out.put_slice(&p);
    }
    out.put_slice(head);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = after;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.put_slice(chunk);
    }
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_slice(&(len as u32).to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

fn invalid(what: &str) -> io::Error {
    tracing::debug!(reason = what, "unix socket: closing an HTTP/2 connection");
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 8192];
            let mut read = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // Whatever was left half-read goes on as it is: h2 sees the truncation.
                this.eof = true;
                let rest = this.input.split();
                this.output.unsplit(rest);
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for FixAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;

use tokio::io::AsyncReadExt;

use super::*;

const SETTINGS: u8 = 0x4;
const DATA: u8 = 0x0;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame_header(&mut out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
    out.to_vec()
}

fn request(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(enc: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    enc.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// Everything `client` wrote, as the server reads it through [`FixAuthority`], fed to the
/// reader in pieces of `step` bytes (so frames arrive split anywhere).
async fn through(client: &[u8], step: usize) -> io::Result<Vec<u8>> {
    let (mut tx, rx) = tokio::io::duplex(64);
    let chunks: Vec<Vec<u8>> = client.chunks(step).map(<[u8]>::to_vec).collect();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for c in chunks {
            if tx.write_all(&c).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let result = FixAuthority::new(rx).read_to_end(&mut out).await;
    writer.abort();
    result.map(|_| out)
}

/// (kind, flags, stream, payload) of each frame after the preface.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// The header lists of the output's blocks, decoded as h2 would (CONTINUATIONs joined).
fn blocks(out: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut dec = loona_hpack::Decoder::new();
    let mut lists = Vec::new();
    let mut block = Vec::new();
    for (kind, flags, _, payload) in frames(out) {
        let payload = if kind == HEADERS && flags & PRIORITY != 0 {
            &payload[5..]
        } else {
            &payload[..]
        };
        if kind == HEADERS || kind == CONTINUATION {
            block.extend_from_slice(payload);
            if flags & END_HEADERS != 0 {
                lists.push(dec.decode(&block).unwrap());
                block.clear();
            }
        }
    }
    lists
}

fn authority(list: &[(Vec<u8>, Vec<u8>)]) -> String {
    let (_, v) = list.iter().find(|(n, _)| n == b":authority").unwrap();
    String::from_utf8(v.clone()).unwrap()
}

#[tokio::test]
async fn invalid_authorities_become_localhost_and_the_rest_is_kept() {
    let mut enc = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    // grpcio's percent-encoded path, then grpc-java's raw one (the second block refers to the
    // first's dynamic table entries), then a valid authority, kept.
    let first = request("tmp%2Fh%2Fagent.sock", "/grpm.v1.ProcessManager/List");
    client.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut enc, &first)));
    client.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    let second = request("/tmp/h/agent.sock", "/grpm.v1.ProcessManager/List");
    client.extend(frame(HEADERS, END_HEADERS, 3, &encode(&mut enc, &second)));
    let third = request("box1:7470", "/grpm.v1.ProcessManager/Describe");
    client.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        &encode(&mut enc, &third),
    ));
    for step in [1, 7, 4096] {
        let out = through(&client, step).await.unwrap();
        let lists = blocks(&out);
        assert_eq!(lists.len(), 3, "step {step}");
        assert_eq!(authority(&lists[0]), "localhost");
        assert_eq!(authority(&lists[1]), "localhost");
        assert_eq!(authority(&lists[2]), "box1:7470");
        let mut expected = third.clone();
        expected[3].1 = b"box1:7470".to_vec();
        assert_eq!(lists[2], expected, "other headers unchanged, in order");
        let kinds: Vec<(u8, u8, u32)> = frames(&out).iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            [
                (SETTINGS, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (DATA, END_STREAM, 1),
                (HEADERS, END_HEADERS, 3),
                (HEADERS, END_HEADERS | END_STREAM, 5),
            ],
            "step {step}"
        );
        assert_eq!(frames(&out)[2].3, [0, 0, 0, 0, 0], "DATA passes unchanged");
    }
}

#[tokio::test]
async fn padding_priority_and_continuations_are_understood() {
    let mut enc = loona_hpack::Encoder::new();
    let block = encode(&mut enc, &request("/tmp/h/agent.sock", "/x/Y"));
    let (a, b) = block.split_at(block.len() / 2);
    let mut payload = vec![3u8]; // pad length
    payload.extend([0x80, 0, 0, 1, 15]); // priority: exclusive, depends on 1, weight 15
    payload.extend_from_slice(a);
    payload.extend([0, 0, 0]);
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload));
    client.extend(frame(CONTINUATION, END_HEADERS, 3, b));
    let out = through(&client, 5).await.unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 1, "one HEADERS frame, padding dropped");
    assert_eq!(f[0].1, PRIORITY | END_STREAM | END_HEADERS);
    assert_eq!(f[0].3[..5], [0x80, 0, 0, 1, 15]);
    assert_eq!(authority(&blocks(&out)[0]), "localhost");
}

#[tokio::test]
async fn a_large_block_is_cut_into_continuations() {
    let mut enc = loona_hpack::Encoder::new();
    let mut headers = request("/tmp/h/agent.sock", "/x/Y");
    headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let encoded = encode(&mut enc, &headers);
    let mut client = PREFACE.to_vec();
    let mut chunks = encoded.chunks(MAX_FRAME).peekable();
    let mut first = true;
    while let Some(c) = chunks.next() {
        let end = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        let kind = if first { HEADERS } else { CONTINUATION };
        first = false;
        client.extend(frame(kind, end, 1, c));
    }
    let out = through(&client, 1000).await.unwrap();
    assert!(frames(&out).iter().all(|f| f.3.len() <= MAX_FRAME));
    let lists = blocks(&out);
    assert_eq!(authority(&lists[0]), "localhost");
    assert_eq!(lists[0][6].1.len(), 40_000);
}

#[tokio::test]
async fn anything_but_http2_passes_unchanged() {
    let http1 = b"GET / HTTP/1.1\r\nHost: /tmp/x\r\n\r\n".to_vec();
    assert_eq!(through(&http1, 3).await.unwrap(), http1);
    let truncated = PREFACE[..10].to_vec();
    assert_eq!(through(&truncated, 4).await.unwrap(), truncated);
}

#[tokio::test]
async fn a_broken_header_block_ends_the_connection() {
    let mut client = PREFACE.to_vec();
    // Index 70 refers to a dynamic table entry that does not exist.
    client.extend(frame(HEADERS, END_HEADERS, 1, &[0x80 | 70]));
    assert_eq!(
        through(&client, 100).await.unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, 0, 1, &[0x82]));
    client.extend(frame(DATA, 0, 1, &[]));
    assert!(through(&client, 100).await.is_err(), "block interrupted");
}

#[test]
fn refusals_are_explained_as_h2_would() {
    let mut p = Pseudo::default();
    p.note(b":scheme", b"http");
    assert_eq!(p.refusal().as_deref(), Some("no :method"));
    p.note(b":method", b"POST");
    assert_eq!(p.refusal(), None);
    p.note(b":path", b"");
    assert_eq!(p.refusal().as_deref(), Some("empty :path"));
    assert_eq!(Pseudo::default().refusal(), None, "trailers");
}

#[test]
fn string_lengths_use_the_prefix_integer_encoding() {
    for len in [0, 1, 126, 127, 128, 255, 16_383, 70_000] {
        let mut out = Vec::new();
        encode_literal(&mut out, b"x-a", &vec![b'v'; len]);
        let list = loona_hpack::Decoder::new().decode(&out).unwrap();
        assert_eq!(list[0].1.len(), len);
    }
}

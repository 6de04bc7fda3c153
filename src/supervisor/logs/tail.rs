//! Reading a log back: the last N lines, then (when following) new output as it is written.
//! Readers read the files, never the writer's memory: a slow reader costs the writer nothing,
//! and one that falls so far behind that bytes were rotated away (or flushed) skips them and
//! says how many.

use std::{io, os::unix::fs::FileExt, sync::Arc};

use super::writer::{Segment, StreamLog};

/// Largest chunk read at once.
pub const CHUNK: usize = 64 * 1024;

/// Bytes of one stream, from logical offset `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub data: Vec<u8>,
    /// Bytes skipped just before `offset` (no longer on disk).
    pub skipped: u64,
}

/// A reading position in one log. Blocking: use it inside `spawn_blocking`.
pub struct Cursor {
    log: Arc<StreamLog>,
    pos: u64,
    /// The file `pos` was last read from, and the logical offset of its first byte.
    seg: Option<(std::fs::File, u64)>,
}

impl Cursor {
    pub fn new(log: Arc<StreamLog>) -> Cursor {
        Cursor {
            log,
            pos: 0,
            seg: None,
        }
    }

    /// Starts at the beginning of the last `lines` lines.
    pub fn seek_tail(&mut self, lines: u32) -> io::Result<()> {
        let (segs, end) = self.log.segments()?;
        self.pos = tail_start(&segs, end, lines)?;
        Ok(())
    }

    /// Starts at `offset` (clamped to the end).
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.pos = offset.min(self.log.end());
        Ok(())
    }

    /// The next piece: at most [`CHUNK`] bytes, ending after a newline when there is one in
    /// it. `None` at the end of the log.
    pub fn read_next(&mut self) -> io::Result<Option<Piece>> {
        let end = self.log.end();
        if self.pos >= end {
            self.pos = end;
            return Ok(None);
        }
        let want = (end - self.pos).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut skipped = 0;
        let mut n = self.read_cached(&mut buf)?;
        if n == 0 {
            // Rotated or flushed since: look again.
            let (segs, end) = self.log.segments()?;
            let Some(oldest) = segs.last().map(|s| s.start) else {
                skipped = end - self.pos;
                self.pos = end;
                return Ok(Some(Piece {
                    offset: end,
                    data: Vec::new(),
                    skipped,
                }));
            };
            if self.pos < oldest {
                skipped = oldest - self.pos;
                self.pos = oldest;
            }
            let Some(seg) = segs
                .into_iter()
                .find(|s| s.start <= self.pos && self.pos < s.start + s.len)
            else {
                return Ok(None);
            };
            buf.truncate(((end - self.pos).min(CHUNK as u64)) as usize);
            self.seg = Some((seg.file, seg.start));
            n = self.read_cached(&mut buf)?;
            if n == 0 {
                return Ok(None);
            }
        }
        buf.truncate(n);
        if buf.last() != Some(&b'\n') {
            if let Some(i) = memchr::memrchr(b'\n', &buf) {
                buf.truncate(i + 1);
            }
        }
        let offset = self.pos;
        self.pos += buf.len() as u64;
        Ok(Some(Piece {
            offset,
            data: buf,
            skipped,
        }))
    }

    fn read_cached(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.seg {
            Some((f, start)) if self.pos >= *start => read_full(f, buf, self.pos - start),
            _ => Ok(0),
        }
    }
}

/// Reads as much of `buf` as the file holds at `at`.
fn read_full(f: &std::fs::File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The logical offset where the last `lines` lines before `end` begin (the oldest byte on disk
/// when there are fewer).
fn tail_start(segs: &[Segment], end: u64, lines: u32) -> io::Result<u64> {
    if lines == 0 {
        // Output is written as it comes, so the log may end inside a line: a reader that
        // starts "now" starts at the beginning of that line, never in its middle.
        let mut last = [0u8; 1];
        let ends_whole = match segs.first() {
            Some(seg) if seg.start + seg.len == end && seg.len > 0 => {
                read_full(&seg.file, &mut last, seg.len - 1)? == 1 && last[0] == b'\n'
            }
            _ => true,
        };
        if ends_whole {
            return Ok(end);
        }
        return tail_start(segs, end, 1);
    }
    let mut need = lines;
    let mut buf = vec![0u8; CHUNK];
    // The newline that ends the last line does not start a line.
    let mut first = true;
    for seg in segs {
        let mut hi = seg.len.min(end.saturating_sub(seg.start));
        while hi > 0 {
            let lo = hi.saturating_sub(CHUNK as u64);
            let block = &mut buf[..(hi - lo) as usize];
            let n = read_full(&seg.file, block, lo)?;
            let block = &block[..n];
            let skip_last = first && seg.start + hi == end;
            first = false;
            if let Some(i) = scan_back(block, skip_last, &mut need) {
                return Ok(seg.start + lo + i as u64);
            }
            hi = lo;
        }
    }
    Ok(segs.last().map_or(end, |s| s.start))
}

/// Counts newlines from the end of `block` (ignoring its last byte when `skip_last`); when the
/// `need`-th is found, the index just after it (where that many lines begin).
fn scan_back(block: &[u8], skip_last: bool, need: &mut u32) -> Option<usize> {
    let upto = if skip_last {
        block.len().saturating_sub(1)
    } else {
        block.len()
    };
    for i in memchr::memrchr_iter(b'\n', &block[..upto]) {
        *need -= 1;
        if *need == 0 {
            return Some(i + 1);
        }
    }
    None
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom {
    /// With the last n lines.
    Tail(u32),
    /// At a logical offset (a resume).
    Offset(u64),
}

/// Reads one log as a sequence of pieces: from `from`, then (when `follow`) as it grows, until
/// it closes. The watch is taken before the start is computed, so nothing written in between
/// is missed.
pub fn pieces(
    log: Arc<StreamLog>,
    from: ReadFrom,
    follow: bool,
) -> impl futures_util::Stream<Item = io::Result<Piece>> + Send {
    let rx = log.watch();
    let cursor = Cursor::new(log);
    futures_util::stream::unfold(
        (Some(cursor), rx, Some(from)),
        move |(cursor, mut rx, mut start)| async move {
            let mut cursor = cursor?;
            loop {
                // Marked seen before reading: a write after the read wakes us.
                rx.borrow_and_update();
                let at = start.take();
                let joined = tokio::task::spawn_blocking(move || {
                    let r = match at {
                        Some(ReadFrom::Tail(n)) => cursor.seek_tail(n),
                        Some(ReadFrom::Offset(o)) => cursor.seek(o),
                        None => Ok(()),
                    };
                    let r = r.and_then(|()| cursor.read_next());
                    (cursor, r)
                })
                .await;
                let (c, r) = match joined {
                    Ok(v) => v,
                    Err(e) => return Some((Err(io::Error::other(e)), (None, rx, None))),
                };
                cursor = c;
                match r {
                    Err(e) => return Some((Err(e), (None, rx, None))),
                    Ok(Some(p)) => return Some((Ok(p), (Some(cursor), rx, None))),
                    Ok(None) => {}
                }
                if !follow || rx.borrow().closed || rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogPolicy;

    #[test]
    fn scans_back_for_lines() {
        let mut need = 2;
        assert_eq!(scan_back(b"a\nb\nc\n", true, &mut need), Some(2));
        let mut need = 5;
        assert_eq!(scan_back(b"a\nb\n", true, &mut need), None);
        assert_eq!(need, 4);
        let mut need = 1;
        assert_eq!(scan_back(b"a\nb", false, &mut need), Some(2));
    }

    fn log_in(dir: &std::path::Path, max: u64, keep: u32) -> Arc<StreamLog> {
        Arc::new(StreamLog::new(
            dir.join("1-a.out.log"),
            dir.join("1-a.out.offset"),
            LogPolicy {
                time: false,
                max_size: max,
                keep,
            },
        ))
    }

    fn read_all(c: &mut Cursor) -> (Vec<u8>, u64) {
        let (mut out, mut skipped) = (Vec::new(), 0);
        while let Some(p) = c.read_next().unwrap() {
            skipped += p.skipped;
            out.extend_from_slice(&p.data);
        }
        (out, skipped)
    }

    #[test]
    fn tails_and_reads_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_in(dir.path(), 1024, 3);
        let text: String = (0..500).map(|i| format!("line {i:04}\n")).collect();
        for piece in text.as_bytes().chunks(37) {
            log.feed(piece, 0);
        }
        assert_eq!(log.end(), text.len() as u64);
        // 500 lines of 10 bytes in files of at most 1024: the current file and 3 rotated.
        let (segs, end) = log.segments().unwrap();
        assert_eq!(segs.len(), 4);
        assert!(segs.iter().all(|s| s.len <= 1024 && s.len % 10 == 0));
        let mut c = Cursor::new(log.clone());
        c.seek_tail(3).unwrap();
        assert_eq!(read_all(&mut c).0, b"line 0497\nline 0498\nline 0499\n");
        // Asking for more than is kept gives what is kept, contiguous up to the end.
        c.seek_tail(100_000).unwrap();
        let (all, _) = read_all(&mut c);
        assert!(
            text.as_bytes().ends_with(&all) && all.len() > 3000,
            "{}",
            all.len()
        );
        assert_eq!(end, text.len() as u64);
        // A reader behind the oldest kept byte skips, and says how much.
        let mut c = Cursor::new(log.clone());
        c.seek(0).unwrap();
        let (rest, skipped) = read_all(&mut c);
        assert_eq!(skipped as usize + rest.len(), text.len());
        // Offsets survive a new writer (an agent restart) and a flush.
        let again = log_in(dir.path(), 1024, 3);
        assert_eq!(again.end(), text.len() as u64);
        again.flush().unwrap();
        again.feed(b"after\n", 0);
        let mut c = Cursor::new(again.clone());
        c.seek_tail(10).unwrap();
        let p = c.read_next().unwrap().unwrap();
        assert_eq!(
            (p.offset, &p.data[..]),
            (text.len() as u64, &b"after\n"[..])
        );
    }
}

//! Turning the bytes read from an app's pipe into what goes to its log file: whole lines, each
//! optionally prefixed with the time it was read. A partial last line is held back until its end
//! arrives (so a rotation never falls inside it and a reader sees whole lines), until it grows
//! past [`HOLD_MAX`], until the app is quiet for a while (the capture task asks), or until the
//! pipe ends, where an unterminated last line gets a newline so that the next instance's output
//! starts on a line of its own.

use std::io;

use memchr::{memchr, memrchr};

use crate::model::rfc3339_ms;

/// A held-back partial line longer than this is written as it is (and the line is split).
pub const HOLD_MAX: usize = 64 * 1024;

/// Where output goes: the writer, which rotates between calls as needed.
pub type Emit<'a> = &'a mut dyn FnMut(&[u8]) -> io::Result<()>;

#[derive(Debug, Default)]
pub struct Lines {
    time: bool,
    /// The partial last line, not yet written.
    pending: Vec<u8>,
    /// When the first byte of `pending` was read.
    pending_ms: u64,
    /// The last byte written was not a newline (a partial line was released).
    mid_line: bool,
    /// Reused for timestamped output.
    scratch: Vec<u8>,
    /// The last timestamp formatted, and its text: lines read together share it.
    stamp: (u64, Vec<u8>),
}

impl Lines {
    pub fn new(time: bool) -> Lines {
        Lines {
            time,
            ..Lines::default()
        }
    }

    /// The file already ends inside a line (left so by a previous agent): what comes first
    /// continues it, without a timestamp.
    pub fn continue_line(&mut self, mid_line: bool) {
        self.mid_line = mid_line;
    }

    /// True when a partial line is held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Feeds bytes read at `now_ms`; emits every complete line.
    pub fn feed(&mut self, data: &[u8], now_ms: u64, emit: Emit<'_>) -> io::Result<()> {
        if self.time {
            self.feed_timed(data, now_ms, emit)
        } else {
            self.feed_plain(data, emit)
        }
    }

    /// Without timestamps, complete lines go out straight from `data`, without a copy; only a
    /// short partial last line is copied (held back).
    fn feed_plain(&mut self, mut data: &[u8], emit: Emit<'_>) -> io::Result<()> {
        if !self.pending.is_empty() {
            match memchr(b'\n', data) {
                // A small batch goes out in one write with the line it finishes.
                Some(_) if data.len() <= HOLD_MAX => {
                    let Some(j) = memrchr(b'\n', data) else {
                        return Ok(());
                    };
                    self.pending.extend_from_slice(&data[..=j]);
                    data = &data[j + 1..];
                    self.mid_line = false;
                    let r = emit(&self.pending);
                    self.pending.clear();
                    self.shrink();
                    r?;
                }
                Some(i) => {
                    self.pending.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    self.mid_line = false;
                    let r = emit(&self.pending);
                    self.pending.clear();
                    self.shrink();
                    r?;
                }
                None if self.pending.len() + data.len() <= HOLD_MAX => {
                    self.pending.extend_from_slice(data);
                    return Ok(());
                }
                None => {
                    // Too long to hold: the line goes out in pieces.
                    self.mid_line = true;
                    let r = emit(&self.pending).and_then(|()| emit(data));
                    self.pending.clear();
                    self.shrink();
                    return r;
                }
            }
        }
        let rest = match memrchr(b'\n', data) {
            Some(j) => {
                self.mid_line = false;
                emit(&data[..=j])?;
                &data[j + 1..]
            }
            None => data,
        };
        if rest.len() > HOLD_MAX {
            self.mid_line = true;
            emit(rest)
        } else {
            self.pending.extend_from_slice(rest);
            Ok(())
        }
    }

    fn feed_timed(&mut self, data: &[u8], now_ms: u64, emit: Emit<'_>) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let mut rest = data;
        while let Some(i) = memchr(b'\n', rest) {
            let at = if self.pending.is_empty() {
                now_ms
            } else {
                self.pending_ms
            };
            self.put_prefix(&mut out, at);
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
            self.pending.clear();
            self.mid_line = false;
        }
        if !rest.is_empty() {
            if self.pending.is_empty() {
                self.pending_ms = now_ms;
            }
            self.pending.extend_from_slice(rest);
        }
        let r = if out.is_empty() { Ok(()) } else { emit(&out) };
        // A fast writer keeps its buffer; a quiet one gives a big one back.
        if out.capacity() > 4 * HOLD_MAX && data.len() < HOLD_MAX {
            out = Vec::new();
        }
        self.scratch = out;
        r?;
        self.release_if_long(emit)
    }

    fn put_prefix(&mut self, out: &mut Vec<u8>, at_ms: u64) {
        if self.time && !self.mid_line {
            if self.stamp.1.is_empty() || self.stamp.0 != at_ms {
                self.stamp = (at_ms, rfc3339_ms(at_ms).into_bytes());
            }
            out.extend_from_slice(&self.stamp.1);
            out.push(b' ');
        }
    }

    fn release_if_long(&mut self, emit: Emit<'_>) -> io::Result<()> {
        if self.pending.len() > HOLD_MAX {
            self.release(false, emit)?;
        }
        Ok(())
    }

    /// Writes the held-back partial line as it is; at the end of the output (`eof`), an
    /// unterminated last line also gets its newline.
    pub fn release(&mut self, eof: bool, emit: Emit<'_>) -> io::Result<()> {
        let mut out = Vec::with_capacity(self.pending.len() + 32);
        if !self.pending.is_empty() {
            self.put_prefix(&mut out, self.pending_ms);
            out.append(&mut self.pending);
            self.mid_line = true;
        }
        if eof && self.mid_line {
            out.push(b'\n');
            self.mid_line = false;
        }
        self.shrink();
        if out.is_empty() {
            Ok(())
        } else {
            emit(&out)
        }
    }

    fn shrink(&mut self) {
        if self.pending.capacity() > 2 * HOLD_MAX {
            self.pending = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` (each read at its time) and returns what was emitted, call by call.
    fn run(time: bool, parts: &[(&str, u64)], eof: bool) -> Vec<String> {
        let mut l = Lines::new(time);
        let mut got = Vec::new();
        let mut emit = |b: &[u8]| {
            got.push(String::from_utf8(b.to_vec()).unwrap());
            Ok(())
        };
        for (p, at) in parts {
            l.feed(p.as_bytes(), *at, &mut emit).unwrap();
        }
        if eof {
            l.release(true, &mut emit).unwrap();
        }
        got
    }

    #[test]
    fn holds_back_partial_lines() {
        assert_eq!(
            run(false, &[("a\nb", 0), ("c\nd\ne", 0), ("f\n", 0)], false),
            ["a\n", "bc\nd\n", "ef\n"]
        );
        assert_eq!(
            run(false, &[("abc", 0), ("def", 0)], false),
            [] as [&str; 0]
        );
    }

    #[test]
    fn terminates_the_last_line_at_eof() {
        assert_eq!(run(false, &[("a\nlast", 0)], true), ["a\n", "last\n"]);
        assert_eq!(run(false, &[("a\n", 0)], true), ["a\n"]);
        assert_eq!(run(false, &[], true), [] as [&str; 0]);
    }

    #[test]
    fn releases_a_quiet_partial_line_without_splitting_its_prefix() {
        let mut l = Lines::new(true);
        let mut got = Vec::new();
        let mut emit = |b: &[u8]| {
            got.push(String::from_utf8(b.to_vec()).unwrap());
            Ok(())
        };
        l.feed(b"prompt> ", 0, &mut emit).unwrap();
        assert!(l.has_pending());
        l.release(false, &mut emit).unwrap();
        l.feed(b"yes\nnext\n", 2000, &mut emit).unwrap();
        l.release(true, &mut emit).unwrap();
        assert_eq!(
            got,
            [
                "1970-01-01T00:00:00.000Z prompt> ",
                "yes\n1970-01-01T00:00:02.000Z next\n"
            ]
        );
    }

    #[test]
    fn timestamps_each_line_when_its_first_byte_was_read() {
        assert_eq!(
            run(true, &[("a\nb", 1000), ("c\n", 5000)], false),
            [
                "1970-01-01T00:00:01.000Z a\n",
                "1970-01-01T00:00:01.000Z bc\n"
            ]
        );
        assert_eq!(
            run(true, &[("x", 1)], true),
            ["1970-01-01T00:00:00.001Z x\n"]
        );
    }

    #[test]
    fn splits_only_lines_longer_than_the_hold_limit() {
        let long = "x".repeat(HOLD_MAX + 1);
        let got = run(false, &[(&long, 0), ("y\n", 0)], false);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), HOLD_MAX + 1);
        assert_eq!(got[1], "y\n");
    }
}

//! Size-based rotation, decided at line boundaries. The writer asks [`cut`] how much of the
//! next output fits in the current file; a rotation renames `X.log` to `X.log.1` (shifting the
//! older ones up to `keep`, dropping the oldest) and reopens `X.log`. Nothing is copied and
//! nothing is truncated, so no byte is lost or duplicated at a rotation.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A file that ends inside a line may grow this far past the limit to finish that line.
pub const FINISH_SLACK: u64 = super::lines::HOLD_MAX as u64;

/// How much of some output goes into the current file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// All of it; no rotation needed.
    All,
    /// The first `n` bytes (possibly none), then rotate, then decide again for the rest.
    At(usize),
}

/// Decides where the current file (`len` bytes, limit `max`, `mid_line` when its last byte is
/// not a newline) ends, for `data` about to be written:
/// - everything, when it fits;
/// - else up to the last newline that fits;
/// - else, when the file ends inside a line, through the newline that finishes that line if it
///   comes within [`FINISH_SLACK`] past the limit (split there otherwise: the file never grows
///   past `max + FINISH_SLACK`);
/// - else, when the file is not empty, nothing (rotate first: the line starts a new file);
/// - else (a single line longer than `max`): `max` bytes; only such a line is split.
pub fn cut(len: u64, max: u64, mid_line: bool, data: &[u8]) -> Cut {
    let room = max.saturating_sub(len);
    if data.len() as u64 <= room {
        return Cut::All;
    }
    let room = room as usize; // < data.len()
    if let Some(i) = memchr::memrchr(b'\n', &data[..room]) {
        return Cut::At(i + 1);
    }
    if mid_line {
        // The slack counts from the limit, not from this write: a file ends at most
        // FINISH_SLACK past `max` however many writes finish the line.
        let limit = (max + FINISH_SLACK)
            .saturating_sub(len)
            .min(data.len() as u64) as usize;
        return match memchr::memchr(b'\n', &data[..limit]) {
            Some(i) => Cut::At(i + 1),
            None => Cut::At(limit),
        };
    }
    if len > 0 {
        Cut::At(0)
    } else {
        Cut::At(room.max(1))
    }
}

/// `X.log.N`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `X.log.1..keep-1` up by one (the old `X.log.keep` is replaced, so dropped), then
/// renames `X.log` to `X.log.1`.
pub fn shift(path: &Path, keep: u32) -> io::Result<()> {
    for n in (1..keep).rev() {
        match fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match fs::rename(path, rotated(path, 1)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_whole() {
        assert_eq!(cut(0, 10, false, b"abc\n"), Cut::All);
        assert_eq!(cut(6, 10, false, b"abc\n"), Cut::All);
    }

    #[test]
    fn cuts_after_the_last_line_that_fits() {
        assert_eq!(cut(0, 10, false, b"abc\ndef\nghi\n"), Cut::At(8));
        assert_eq!(cut(4, 10, false, b"ab\ncd\nef\n"), Cut::At(6));
    }

    #[test]
    fn rotates_first_when_no_line_fits() {
        assert_eq!(cut(8, 10, false, b"abcdef\n"), Cut::At(0));
        assert_eq!(cut(10, 10, false, b"a\n"), Cut::At(0));
    }

    #[test]
    fn splits_only_a_line_longer_than_the_limit() {
        assert_eq!(cut(0, 4, false, b"abcdefgh\n"), Cut::At(4));
    }

    #[test]
    fn finishes_a_started_line_within_the_slack() {
        assert_eq!(cut(9, 10, true, b"abc\nxyz\n"), Cut::At(4));
        let long = vec![b'x'; FINISH_SLACK as usize + 10];
        assert_eq!(cut(9, 10, true, &long), Cut::At(FINISH_SLACK as usize + 1));
    }

    #[test]
    fn a_stream_without_newlines_stays_within_the_slack() {
        // The writer's loop, fed pieces of one endless line as the line splitter emits them.
        let max = 100_000u64;
        let piece = vec![b'x'; FINISH_SLACK as usize + 1];
        let (mut len, mut mid, mut largest, mut rotations) = (0u64, false, 0u64, 0);
        for _ in 0..50 {
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let n = match cut(len, max, mid, rest) {
                    Cut::All => rest.len(),
                    Cut::At(n) => n,
                };
                if n > 0 {
                    len += n as u64;
                    mid = rest[n - 1] != b'\n';
                    rest = &rest[n..];
                }
                largest = largest.max(len);
                if !rest.is_empty() {
                    (len, mid) = (0, false);
                    rotations += 1;
                }
            }
        }
        assert!(rotations > 10);
        assert!(
            largest <= max + FINISH_SLACK,
            "a file grew to {largest}, {} past the limit",
            largest - max
        );
    }

    #[test]
    fn always_makes_progress() {
        // Applying the cuts over and over consumes any input.
        for data in [
            &b"a"[..],
            b"\n\n\n",
            b"abcdefghijklmnop",
            b"ab\ncdefghij\nk",
        ] {
            for max in 1..6u64 {
                let (mut len, mut mid, mut rest, mut rounds) = (0u64, false, data, 0);
                loop {
                    rounds += 1;
                    assert!(rounds < 100, "no progress on {data:?} max {max}");
                    let n = match cut(len, max, mid, rest) {
                        Cut::All => break,
                        Cut::At(n) => n,
                    };
                    assert!(n > 0 || len > 0, "an empty cut of an empty file");
                    rest = &rest[n..];
                    // Rotated: the rest goes to a fresh file.
                    (len, mid) = (0, false);
                }
            }
        }
    }

    #[test]
    fn shifts_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1-a.out.log");
        for round in 0..4 {
            fs::write(&p, format!("{round}")).unwrap();
            shift(&p, 2).unwrap();
        }
        assert!(!p.exists());
        assert_eq!(fs::read_to_string(rotated(&p, 1)).unwrap(), "3");
        assert_eq!(fs::read_to_string(rotated(&p, 2)).unwrap(), "2");
        assert!(!rotated(&p, 3).exists());
    }
}

//! Events on disk, so that a subscriber can resume across an agent restart, and sequence numbers
//! are never reused, even after a crash.
//!
//! - `events.jsonl` (and the previous file, `events.jsonl.1`): one JSON event per line, appended
//!   by a writer thread in batches. The file is rotated (renamed, never copied) past a size
//!   bound. A line torn by a crash is skipped on reading.
//! - `events.seq`: a reserved high-water mark for sequence numbers, written atomically a block
//!   ahead. After a crash the next agent continues from it; the numbers in between, which may
//!   have named events that never reached the file, are reported as a gap to anyone replaying
//!   across them.

use std::{
    collections::VecDeque,
    fs,
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
};

use crate::home::write_atomic;
use crate::model::{Cause, Event, EventKind};

/// Sequence numbers reserved at a time.
const BLOCK: u64 = 10_000;
/// Events waiting for the writer before new ones are dropped (a slow or stuck disk must not
/// grow memory without bound): a count and approximate bytes.
const MAX_PENDING: usize = 100_000;
const MAX_PENDING_BYTES: usize = 4 << 20;

struct State {
    pending: VecDeque<Arc<Event>>,
    pending_bytes: usize,
    /// Events dropped because the writer was behind: written as one gap line before the next
    /// batch, so a replay across a restart reports them.
    dropped: Option<(u64, u64)>,
    reserved: u64,
    closing: bool,
    recovered: Option<(u64, VecDeque<Event>)>,
}

pub struct EventLog {
    path: PathBuf,
    seq_path: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    wake: Condvar,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EventLog {
    /// Reads what a previous agent left in `dir` and starts the writer thread. `keep` bounds
    /// what is read back and sizes the files.
    pub fn open(dir: &Path, keep: usize) -> io::Result<Arc<EventLog>> {
        let path = dir.join("events.jsonl");
        let seq_path = dir.join("events.seq");
        let reserved = match fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is corrupt: {e}", seq_path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let mut events: VecDeque<Event> = VecDeque::new();
        for p in [path.with_extension("jsonl.1"), path.clone()] {
            read_lines(&p, keep, &mut events)?;
        }
        let last_logged = events.back().map_or(0, |e| e.seq);
        let mut next_seq = reserved.max(last_logged + 1).max(1);
        let mut hole = None;
        if next_seq > last_logged + 1 {
            // A crash: numbers after the last logged event may have been used by events that
            // never reached the file. Say so to anyone replaying across them.
            let mut g = Event::new(EventKind::Gap, 0, "", Cause::Recovery);
            g.seq = next_seq;
            g.lost = next_seq - 1 - last_logged;
            g.message = "events lost in an agent crash (at most this many)".into();
            next_seq += 1;
            hole = Some(g);
        }
        if let Some(g) = &hole {
            events.push_back(g.clone());
        }
        while events.len() > keep {
            events.pop_front();
        }
        let log = Arc::new(EventLog {
            path,
            seq_path,
            max_bytes: (keep as u64 * 1024).max(1 << 20),
            state: Mutex::new(State {
                pending: hole.into_iter().map(Arc::new).collect(),
                pending_bytes: 0,
                dropped: None,
                reserved: 0,
                closing: false,
                recovered: Some((next_seq, events)),
            }),
            wake: Condvar::new(),
            writer: Mutex::new(None),
        });
        // Failing here (a full disk) is not fatal: publishing tries again, and holds events
        // back until it succeeds.
        if let Err(e) = log.reserve_through(next_seq) {
            tracing::error!(error = %e, path = %log.seq_path.display(), "cannot reserve event numbers");
        }
        let w = log.clone();
        let handle = std::thread::Builder::new()
            .name("grpm-eventlog".into())
            .spawn(move || w.write_loop())?;
        *log.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sequence number to continue from, and the events read back (taken once).
    pub fn recovered(&self, keep: usize) -> (u64, VecDeque<Event>) {
        let (next, mut events) = self.lock().recovered.take().unwrap_or((1, VecDeque::new()));
        while events.len() > keep {
            events.pop_front();
        }
        (next, events)
    }

    /// Makes sure `seq` is below the reserved mark on disk before it is handed out; fails
    /// when the mark must move and cannot be written (the number must then not be used).
    pub fn reserve_through(&self, seq: u64) -> io::Result<()> {
        let mut st = self.lock();
        if seq < st.reserved {
            return Ok(());
        }
        let mark = seq.saturating_add(BLOCK);
        write_atomic(&self.seq_path, format!("{mark}\n").as_bytes())?;
        st.reserved = mark;
        Ok(())
    }

    /// Queues an event for the file.
    pub fn append(&self, e: Arc<Event>) {
        let mut st = self.lock();
        let size = cost(&e);
        if st.pending.len() >= MAX_PENDING || st.pending_bytes + size > MAX_PENDING_BYTES {
            if st.dropped.is_none() {
                tracing::error!("the event log writer is behind; events are not reaching the disk");
            }
            let d = st.dropped.get_or_insert((e.seq, 0));
            d.0 = e.seq;
            d.1 += 1;
            return;
        }
        if let Some((last_seq, lost)) = st.dropped.take() {
            let mut g = Event::new(EventKind::Gap, 0, "", Cause::Recovery);
            g.seq = last_seq;
            g.lost = lost;
            g.message = "events the agent could not write to disk in time".into();
            st.pending.push_back(Arc::new(g));
        }
        st.pending_bytes += size;
        st.pending.push_back(e);
        drop(st);
        self.wake.notify_one();
    }

    /// Writes what is pending, records `next_seq` exactly (a clean stop leaves no hole), and
    /// stops the writer.
    pub fn close(&self, next_seq: u64) {
        self.lock().closing = true;
        self.wake.notify_one();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
        if let Err(e) = write_atomic(&self.seq_path, format!("{next_seq}\n").as_bytes()) {
            tracing::error!(error = %e, "cannot record the event sequence");
        }
    }

    fn write_loop(&self) {
        let mut file = None;
        // A failed write may have left part of a line: the next write starts on a new line,
        // so that the fragment stays one unreadable line (skipped on reading) and glues onto
        // nothing. (Truncating it away instead would free space a full disk then hands to
        // whichever write comes next.)
        let mut torn = false;
        loop {
            let (batch, closing) = {
                let mut st = self.lock();
                while st.pending.is_empty() && !st.closing {
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.pending_bytes = 0;
                (st.pending.drain(..).collect::<Vec<_>>(), st.closing)
            };
            if !batch.is_empty() {
                let written = self.write_batch(&mut file, &batch, torn);
                torn = written.is_err();
                if let Err(e) = written {
                    // Counted as dropped: a gap line says so before the next batch that is
                    // written, so a replay across a restart reports them.
                    let mut st = self.lock();
                    if st.dropped.is_none() {
                        tracing::error!(error = %e, path = %self.path.display(), "cannot write events");
                    }
                    let lost: u64 = batch
                        .iter()
                        .map(|e| if e.kind == EventKind::Gap { e.lost } else { 1 })
                        .sum();
                    let last = batch.last().map_or(0, |e| e.seq);
                    let d = st.dropped.get_or_insert((last, 0));
                    d.0 = d.0.max(last);
                    d.1 += lost;
                    file = None;
                }
            }
            if closing {
                return;
            }
        }
    }

    fn write_batch(
        &self,
        file: &mut Option<fs::File>,
        batch: &[Arc<Event>],
        torn: bool,
    ) -> io::Result<()> {
        let mut buf = Vec::with_capacity(batch.len() * 256 + 1);
        if torn {
            buf.push(b'\n');
        }
        for e in batch {
            serde_json::to_writer(&mut buf, &**e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        if file.is_none() {
            *file = Some(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let f = file.as_mut().ok_or_else(|| io::Error::other("no file"))?;
        f.write_all(&buf)?;
        if f.metadata()?.len() >= self.max_bytes {
            fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
            *file = None;
        }
        Ok(())
    }
}

fn read_lines(path: &Path, keep: usize, into: &mut VecDeque<Event>) -> io::Result<()> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(e) if into.back().is_none_or(|b| b.seq < e.seq) => {
                into.push_back(e);
                if into.len() > keep {
                    into.pop_front();
                }
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(path = %path.display(), "skipping an unreadable event line"),
        }
    }
    Ok(())
}

/// Roughly what an event costs in memory (queue bounds) and on disk (rotation).
pub fn cost(e: &Event) -> usize {
    256 + e.app.len()
        + e.action.len()
        + e.message.len()
        + e.error.as_ref().map_or(0, String::len)
        + e.data
            .iter()
            .map(|(k, v)| k.len() + v.len() + 64)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventKind;

    fn ev(seq: u64) -> Arc<Event> {
        let mut e = Event::new(EventKind::Online, 1, "a", Cause::Crash);
        e.seq = seq;
        Arc::new(e)
    }

    #[test]
    fn a_clean_close_continues_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 100).unwrap();
        assert_eq!(log.recovered(100).0, 1);
        for s in 1..=3 {
            log.append(ev(s));
        }
        log.close(4);
        let log = EventLog::open(dir.path(), 100).unwrap();
        let (next, events) = log.recovered(100);
        assert_eq!(next, 4);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        log.close(4);
    }

    #[test]
    fn after_a_crash_numbers_are_not_reused_and_the_hole_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 100).unwrap();
        log.recovered(100);
        log.append(ev(1));
        log.append(ev(2));
        // A crash: no close. Wait for the writer to get the two lines out.
        let path = dir.path().join("events.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count()
            < 2
        {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A torn last line is skipped.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":3,")
            .unwrap();
        let log2 = EventLog::open(dir.path(), 100).unwrap();
        let (next, events) = log2.recovered(100);
        assert!(next > 2 + BLOCK - 1, "reused numbers: next = {next}");
        let gap = events.back().unwrap();
        assert_eq!(
            (gap.kind, gap.seq, gap.lost),
            (EventKind::Gap, next - 1, next - 2 - 2)
        );
        log2.close(next);
    }

    #[test]
    fn rotation_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 1).unwrap(); // max_bytes: 1 MiB
        log.recovered(1);
        let big = "x".repeat(2000);
        for s in 1..=600u64 {
            let mut e = (*ev(s)).clone();
            e.message = big.clone();
            log.append(Arc::new(e));
        }
        log.close(601);
        assert!(dir.path().join("events.jsonl.1").exists());
        let log = EventLog::open(dir.path(), 10_000).unwrap();
        let (next, events) = log.recovered(10_000);
        assert_eq!(next, 601);
        // Every line of both files is read back, in order.
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(*seqs.last().unwrap(), 600);
        log.close(601);
    }

    #[test]
    fn a_failed_batch_is_counted_and_reported_as_a_gap_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // Appending to a directory fails, as appending to a full disk does.
        fs::create_dir(&path).unwrap();
        let log = EventLog::open(dir.path(), 100).unwrap();
        log.recovered(100);
        log.append(ev(1));
        log.append(ev(2));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.lock().dropped.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the failure was not counted"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fs::remove_dir(&path).unwrap();
        log.append(ev(3));
        log.close(4);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .filter(|l| !l.is_empty()) // where a failed write may have left a fragment
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines
                .iter()
                .map(|e| (e.kind, e.seq, e.lost))
                .collect::<Vec<_>>(),
            [(EventKind::Gap, 2, 2), (EventKind::Online, 3, 0)]
        );
    }
}

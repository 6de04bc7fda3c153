//! `grpm monit`: a live terminal view of one agent's apps, or a fleet's (with a HOST column).
//! `state` holds what is shown and how keys change it (pure), `draw` renders it (tested
//! against ratatui's `TestBackend`); this file connects them to agents and the terminal.
//!
//! Each host has one task that lists its apps whenever an event arrives (at most every
//! [`MIN_GAP`]) and at least every [`PERIOD`] (for new usage samples); the selected app's output
//! is followed by another; keys come from a thread that reads the terminal. All of it reaches
//! the screen through one channel, and the screen is redrawn at most every `--refresh`.

mod draw;
mod state;

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tokio::{sync::mpsc, task::JoinHandle, time::sleep_until};

use super::{args::MonitArgs, failure::Failure, fleet::Place};
use crate::{
    client::{self, BaseEnv, Client, EventStream, LogsQuery, Subscription},
    model::{AppInfo, LogStream},
};
use state::{Effect, Input, Key, Monit, Verb};

/// A host's apps are listed again at least this often (usage is sampled every 2 s).
const PERIOD: Duration = Duration::from_secs(1);
/// ... and at most this often, however many events arrive (a crash loop sends many).
const MIN_GAP: Duration = Duration::from_millis(100);
/// Lines of output shown when an app is selected, before new ones.
const TAIL: u32 = 100;

enum Msg {
    Apps(Option<String>, Vec<AppInfo>),
    Log(Key, String),
    Said(String),
    Key(Input),
    Resized,
}

pub async fn run(place: &Place, args: MonitArgs) -> Result<(), Failure> {
    if !std::io::stdout().is_terminal() {
        return Err(Failure::Usage(
            "monit draws on a terminal; in scripts, use `grpm list --json` or `grpm events`".into(),
        ));
    }
    let (tx, rx) = mpsc::channel(4096);
    let conns = connect(place, &tx).await?;
    for (host, client) in &conns {
        tokio::spawn(watch(host.clone(), client.clone(), tx.clone()));
    }
    spawn_keys(tx.clone());
    let mut terminal = ratatui::try_init()
        .map_err(|e| Failure::Failed(format!("cannot set up the terminal: {e}")))?;
    let began = Instant::now();
    let mut frames = 0u64;
    let result = ui(&mut terminal, conns, tx, rx, args.refresh, &mut frames).await;
    ratatui::restore();
    if let Some(path) = args.frames_file {
        let line = format!("{frames} {:.3}\n", began.elapsed().as_secs_f64());
        if let Err(e) = std::fs::write(&path, line) {
            eprintln!("grpm: cannot write {}: {e}", path.display());
        }
    }
    result
}

async fn connect(
    place: &Place,
    tx: &mpsc::Sender<Msg>,
) -> Result<Vec<(Option<String>, Client)>, Failure> {
    match place {
        Place::Local(home, _) => Ok(vec![(None, client::connect_local(home, true).await?)]),
        Place::Fleet {
            hosts, timeouts, ..
        } => {
            let tries = futures_util::future::join_all(
                hosts.iter().map(|h| client::connect_remote(h, timeouts)),
            )
            .await;
            let mut conns = Vec::new();
            for (h, c) in hosts.iter().zip(tries) {
                match c {
                    Ok(c) => conns.push((Some(h.label.clone()), c)),
                    Err(e) => {
                        let _ = tx.try_send(Msg::Said(format!(
                            "{}: {}",
                            h.label,
                            Failure::from(e).message()
                        )));
                    }
                }
            }
            if conns.is_empty() {
                return Err(Failure::Failed("no host answered".into()));
            }
            Ok(conns)
        }
    }
}

async fn ui(
    terminal: &mut ratatui::DefaultTerminal,
    conns: Vec<(Option<String>, Client)>,
    tx: mpsc::Sender<Msg>,
    mut rx: mpsc::Receiver<Msg>,
    refresh: Duration,
    drawn: &mut u64,
) -> Result<(), Failure> {
    let mut m = Monit::new(conns.iter().any(|(h, _)| h.is_some()));
    let mut follower: Option<JoinHandle<()>> = None;
    let mut frames = tokio::time::interval(refresh);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    // SIGTERM ends monit like q (the terminal is restored by the caller); so does SIGINT.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::Failed(format!("cannot handle SIGTERM: {e}")))?;
    let draw_err = |e: std::io::Error| Failure::Failed(format!("cannot draw: {e}"));
    loop {
        let mut now = false;
        tokio::select! {
            _ = frames.tick() => {
                if dirty {
                    terminal.draw(|f| draw::draw(f, &m)).map_err(draw_err)?;
                    *drawn += 1;
                    dirty = false;
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            msg = rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                let effect = match msg {
                    Msg::Apps(host, apps) => m.set_apps(host.as_deref(), apps),
                    Msg::Log(key, line) => {
                        if m.selected().is_some_and(|r| (r.host.clone(), r.info.id) == key) {
                            m.push_log(line);
                        }
                        None
                    }
                    Msg::Said(s) => {
                        m.message = s;
                        None
                    }
                    Msg::Key(input) => {
                        now = true;
                        Some(m.key(input))
                    }
                    Msg::Resized => {
                        now = true;
                        None
                    }
                };
                dirty = true;
                match effect {
                    Some(Effect::Quit) => return Ok(()),
                    Some(Effect::Follow(key)) => {
                        if let Some(f) = follower.take() {
                            f.abort();
                        }
                        follower = key.and_then(|key| {
                            let c = client_of(&conns, &key.0)?;
                            Some(tokio::spawn(follow(key, c, tx.clone())))
                        });
                    }
                    Some(Effect::Act { verb, key, name }) => {
                        if let Some(c) = client_of(&conns, &key.0) {
                            tokio::spawn(act(verb, key, name, c, tx.clone()));
                        }
                    }
                    Some(Effect::None) | None => {}
                }
            }
        }
        // Keys answer at once; everything else waits for the next frame.
        if now {
            terminal.draw(|f| draw::draw(f, &m)).map_err(draw_err)?;
            *drawn += 1;
            dirty = false;
        }
    }
}

fn client_of(conns: &[(Option<String>, Client)], host: &Option<String>) -> Option<Client> {
    conns
        .iter()
        .find(|(h, _)| h == host)
        .map(|(_, c)| c.clone())
}

/// Lists a host's apps after every event (at most every [`MIN_GAP`]) and every [`PERIOD`].
async fn watch(host: Option<String>, mut client: Client, tx: mpsc::Sender<Msg>) {
    let label = host.as_ref().map_or_else(String::new, |h| format!("{h}: "));
    let follow_all = Subscription::default();
    let mut events = match client.subscribe(&follow_all).await {
        Ok(s) => Some(s),
        Err(e) => {
            let _ = tx.send(Msg::Said(format!("{label}no events: {}", e))).await;
            None
        }
    };
    let mut last = Instant::now() - PERIOD;
    let mut pending = true;
    loop {
        let due = last + if pending { MIN_GAP } else { PERIOD };
        tokio::select! {
            _ = sleep_until(due.into()) => {
                last = Instant::now();
                pending = false;
                let msg = match client.list().await {
                    Ok(apps) => Msg::Apps(host.clone(), apps),
                    Err(e) => Msg::Said(format!("{label}{}", e)),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            ev = next_event(&mut events) => match ev {
                Some(_) => pending = true,
                None => events = None,
            },
        }
    }
}

/// The next event; `None` when the stream ended or failed; never, without a stream.
async fn next_event(events: &mut Option<EventStream>) -> Option<()> {
    match events {
        Some(s) => s.next().await.ok().flatten().map(|_| ()),
        None => std::future::pending().await,
    }
}

/// Follows one app's output, line by line, tagged with its stream.
async fn follow(key: Key, mut client: Client, tx: mpsc::Sender<Msg>) {
    let query = LogsQuery {
        target: key.1.to_string(),
        lines: Some(TAIL),
        follow: true,
        ..LogsQuery::default()
    };
    let mut stream = match client.logs(&query).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Msg::Log(key, format!("[{}]", e))).await;
            return;
        }
    };
    let mut partial = [Vec::new(), Vec::new()];
    while let Ok(Some(chunk)) = stream.next().await {
        let (tag, buf) = match chunk.stream {
            LogStream::Out => ("out", &mut partial[0]),
            LogStream::Err => ("err", &mut partial[1]),
        };
        buf.extend_from_slice(&chunk.data);
        while let Some(at) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            let text = printable(&line[..line.len() - 1]);
            if tx
                .send(Msg::Log(key.clone(), format!("{tag} | {text}")))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// An app's bytes as text that cannot move the cursor or change the terminal: control
/// characters (escape sequences included) become `?`.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

async fn act(verb: Verb, key: Key, name: String, mut client: Client, tx: mpsc::Sender<Msg>) {
    let target = key.1.to_string();
    let result = match verb {
        Verb::Restart => client.restart(&target, BaseEnv::Keep).await,
        Verb::Stop => client.stop(&target).await,
        Verb::Start => client.start_target(&target).await,
    };
    let said = match result {
        Ok(_) => format!("{} {name}: done", verb.word()),
        Err(e) => format!("{} {name}: {}", verb.word(), e),
    };
    let _ = tx.send(Msg::Said(said)).await;
}

/// Reads the terminal's keys on a thread of its own (crossterm's reads block).
fn spawn_keys(tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || loop {
        let msg = match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => {
                let input = match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        Input::Interrupt
                    }
                    KeyCode::Char(c) => Input::Char(c),
                    KeyCode::Up => Input::Up,
                    KeyCode::Down => Input::Down,
                    KeyCode::Enter => Input::Enter,
                    KeyCode::Esc => Input::Esc,
                    KeyCode::Backspace => Input::Backspace,
                    _ => continue,
                };
                Msg::Key(input)
            }
            Ok(TermEvent::Resize(..)) => Msg::Resized,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.blocking_send(msg).is_err() {
            return;
        }
    });
}

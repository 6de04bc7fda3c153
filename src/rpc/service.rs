//! The `grpm.v1.ProcessManager` service: thin; it validates, converts and calls the supervisor.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    pin::Pin,
    sync::Arc,
};

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{transport::server::UdsConnectInfo, Request, Response, Status};

use super::{
    convert, error::Error, logstream, pb, pb::process_manager_server::ProcessManager, Principal,
};
use crate::{
    model::{Cause, Env, EventKind, Target},
    supervisor::{
        Acted, AppView, ApplyRequest, Filter, ReadFrom, Reason, Replay, Samples, Supervisor, Usage,
    },
};

/// Who sent a request, for the events it causes (`manual`, with the caller).
fn origin<T>(req: &Request<T>, method: &str) -> Cause {
    let (uid, pid, peer) = match req.extensions().get::<UdsConnectInfo>() {
        Some(info) => (
            info.peer_cred.map(|c| c.uid()),
            info.peer_cred
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok()),
            "unix".to_string(),
        ),
        None => {
            let addr = req
                .remote_addr()
                .map_or_else(|| "unknown".into(), |a| a.to_string());
            let peer = match req.extensions().get::<Principal>() {
                Some(Principal(how)) => format!("tcp {addr} ({how})"),
                None => format!("tcp {addr}"),
            };
            (None, None, peer)
        }
    };
    Cause::Request {
        method: method.to_string(),
        uid,
        pid,
        peer,
    }
}

/// Refuses a caller environment that did not come over the local socket: an app created or
/// updated remotely gets the agent's environment as its base, never the remote caller's.
fn check_env_origin<T>(req: &Request<T>, has_env: bool) -> Result<(), Error> {
    if has_env && req.extensions().get::<UdsConnectInfo>().is_none() {
        return Err(Error::EnvOverTcp);
    }
    Ok(())
}

/// Bounds on a notification.
const MAX_ACTION: usize = 128;
const MAX_MESSAGE: usize = 64 * 1024;
const MAX_DATA_ENTRIES: usize = 64;
const MAX_DATA_VALUE: usize = 4 * 1024;

/// Refuses what a notification's text must not carry: NUL, and the control characters that
/// drive a terminal (C0 but tab and newline, DEL, C1), so a notification printed as it is
/// (by grpcurl, a script) cannot clear a screen or fake a line. Binary data belongs encoded.
fn check_text(field: &str, text: &str) -> Result<(), Error> {
    match text
        .char_indices()
        .find(|&(_, c)| c.is_control() && c != '\t' && c != '\n')
    {
        Some((at, c)) => Err(Error::ControlCharacter {
            field: field.to_string(),
            at,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// Bound on the apps one Start may create.
const MAX_APPS_PER_REQUEST: usize = 10_000;

/// Lines of each stream a Logs request sends first, unless it asks otherwise; and the most it
/// may ask for.
const DEFAULT_LOG_LINES: u32 = 20;
const MAX_LOG_LINES: u32 = 100_000;
/// Logs streams open at once, across all connections.
const MAX_LOG_READERS: usize = 1024;

pub struct Service {
    sup: Arc<Supervisor>,
    /// The agent's own environment: the base for apps whose creator sent none (remote callers,
    /// grpcurl).
    agent_env: Env,
    /// Where apps run when their spec names no cwd.
    default_cwd: PathBuf,
    /// Cancelled by `Shutdown` once every app is stopped.
    shutdown: CancellationToken,
    /// One permit per open Logs stream.
    log_readers: Arc<Semaphore>,
    /// Cancelled by `Upgrade` once this agent is ready to leave its apps to the next one.
    hand_over: CancellationToken,
}

impl Service {
    pub fn new(
        sup: Arc<Supervisor>,
        agent_env: Env,
        default_cwd: PathBuf,
        shutdown: CancellationToken,
    ) -> Service {
        Service {
            sup,
            agent_env,
            default_cwd,
            shutdown,
            log_readers: Arc::new(Semaphore::new(MAX_LOG_READERS)),
            hand_over: CancellationToken::new(),
        }
    }

    /// The token `Upgrade` cancels (the agent then exits, leaving its apps running).
    pub fn with_hand_over(mut self, token: CancellationToken) -> Service {
        self.hand_over = token;
        self
    }

    /// Listing fields for each view, with the usage of the last sample (`sample: false` for
    /// the answers of actions, whose figures would be stale).
    fn infos(&self, views: Vec<AppView>, sample: bool) -> Vec<pb::AppInfo> {
        let samples = self.sup.samples();
        views
            .iter()
            .map(|v| convert::info(v, Self::usage(&samples, v, sample)))
            .collect()
    }

    /// Listing fields for the apps a request acted on, each with why (`needed_by`,
    /// `dependent_of`), in the order it acted.
    fn acted(&self, acted: Vec<Acted>) -> Vec<pb::AppInfo> {
        let (views, reasons): (Vec<AppView>, Vec<Reason>) =
            acted.into_iter().map(|a| (a.view, a.reason)).unzip();
        let mut infos = self.infos(views, false);
        for (info, reason) in infos.iter_mut().zip(reasons) {
            match reason {
                Reason::Named => {}
                Reason::NeededBy(app) => info.needed_by = app,
                Reason::DependsOn(app) => info.dependent_of = app,
            }
        }
        infos
    }

    /// An app's last sample; zeros when it runs no process now.
    fn usage(samples: &Samples, v: &AppView, sample: bool) -> Usage {
        if sample && v.status.pid().is_some() {
            samples.get(v.tree_id())
        } else {
            Usage::default()
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl ProcessManager for Service {
    type SubscribeStream = EventStream;
    type LogsStream = logstream::ChunkStream;

    async fn logs(
        &self,
        req: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let target = convert::target(&req.target)?;
        let streams = convert::log_streams(req.stream)?;
        let lines = req.lines.unwrap_or(DEFAULT_LOG_LINES);
        if lines > MAX_LOG_LINES {
            return Err(Error::TooManyLines {
                asked: lines,
                max: MAX_LOG_LINES,
            }
            .into());
        }
        let mut resume = HashMap::new();
        for p in &req.from {
            resume.insert(
                (p.app_id, p.instance, convert::log_stream(p.stream)?),
                p.offset,
            );
        }
        let permit = self
            .log_readers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyLogReaders(MAX_LOG_READERS))?;
        // Following all apps: subscribed to `created` before the apps are listed, so an app
        // created meanwhile is not missed (it may be seen twice; it is followed once).
        let created = if req.follow && target == Target::All {
            let filter = Filter {
                kinds: [EventKind::Created].into(),
                ..Filter::default()
            };
            let (_, sub) = self.sup.subscribe(Replay::Now, filter, true)?;
            sub.map(|sub| (sub, self.sup.clone(), streams.clone()))
        } else {
            None
        };
        // Every log is watched here, before any tail is read: nothing written meanwhile is
        // missed by a follower.
        let mut parts = Vec::new();
        for (view, app_logs) in self.sup.logs(&target)? {
            for &s in &streams {
                let from = resume
                    .get(&(view.id, view.instance, s))
                    .map_or(ReadFrom::Tail(lines), |&o| ReadFrom::Offset(o));
                parts.push((
                    (view.id, view.instance, s),
                    logstream::part(&view, &app_logs, s, from, req.follow),
                ));
            }
        }
        let merged = if req.follow {
            logstream::following(parts, created)
        } else {
            logstream::in_order(parts.into_iter().map(|(_, p)| p).collect())
        };
        // The permit is released when the client leaves (the stream is dropped).
        Ok(Response::new(Box::pin(merged.map(move |c| {
            let _held = &permit;
            c
        }))))
    }

    async fn flush(
        &self,
        req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.flush(&target).await?;
        Ok(Response::new(pb::FlushResponse {
            apps: self.infos(views, false),
        }))
    }

    async fn notify_god(
        &self,
        req: Request<pb::NotifyGodRequest>,
    ) -> Result<Response<pb::NotifyGodResponse>, Status> {
        let cause = origin(&req, "NotifyGod");
        let req = req.into_inner();
        let target = convert::target(&req.target)?;
        if req.action.is_empty()
            || req.action.len() > MAX_ACTION
            || req.action.chars().any(char::is_control)
        {
            return Err(Error::BadAction { max: MAX_ACTION }.into());
        }
        if req.message.len() > MAX_MESSAGE {
            return Err(Error::MessageTooLong {
                len: req.message.len(),
                max: MAX_MESSAGE,
            }
            .into());
        }
        if req.data.len() > MAX_DATA_ENTRIES
            || req
                .data
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > MAX_ACTION || v.len() > MAX_DATA_VALUE)
        {
            return Err(Error::BadData {
                entries: MAX_DATA_ENTRIES,
                key: MAX_ACTION,
                value: MAX_DATA_VALUE,
            }
            .into());
        }
        check_text("message", &req.message)?;
        for (k, v) in &req.data {
            check_text(&format!("data key {k:?}"), k)?;
            check_text(&format!("data[{k:?}]"), v)?;
        }
        let data: BTreeMap<String, String> = req.data.into_iter().collect();
        let events = self
            .sup
            .notify(&target, &req.action, &req.message, data, cause)?;
        Ok(Response::new(pb::NotifyGodResponse {
            events: events.iter().map(|e| convert::event_to_pb(e)).collect(),
        }))
    }

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = req.into_inner();
        let mut filter = Filter::default();
        for app in req.apps {
            crate::model::validate_name(&app).map_err(Error::BadAppFilter)?;
            filter.apps.insert(app);
        }
        for k in req.kinds {
            let kind: EventKind = convert::kind_from_pb(k)?;
            filter.kinds.insert(kind);
        }
        let from = match req.from_seq {
            Some(n) => Replay::After(n),
            None if req.recent > 0 => Replay::Recent(req.recent as usize),
            None => Replay::Now,
        };
        let (replay, sub) = self.sup.subscribe(from, filter, !req.no_follow)?;
        // The response stream reads the subscription directly, in the connection's own task:
        // no extra task or channel per subscriber. When the client is slow, HTTP/2 flow
        // control stops the polling and the subscription's bounded queue takes over (gap
        // events); when the client leaves, the stream and with it the subscription are dropped.
        let stream = futures_util::stream::unfold(
            (replay.into_iter(), sub),
            |(mut replay, mut sub)| async move {
                let e = match replay.next() {
                    Some(e) => e,
                    None => sub.as_mut()?.next().await?,
                };
                Some((Ok(convert::event_to_pb(&e)), (replay, sub)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let cause = origin(&req, "Start");
        check_env_origin(&req, req.get_ref().client_env.is_some())?;
        let req = req.into_inner();
        let new_apps = match (req.app, req.apps.is_empty()) {
            (Some(app), true) => vec![app],
            (None, _) => req.apps,
            (Some(_), false) => return Err(Error::AppAndApps.into()),
        };
        let views = match (new_apps.is_empty(), req.target.is_empty()) {
            (false, true) => {
                if new_apps.len() > MAX_APPS_PER_REQUEST {
                    return Err(Error::TooManyApps {
                        count: new_apps.len(),
                        max: MAX_APPS_PER_REQUEST,
                    }
                    .into());
                }
                let specs = new_apps
                    .into_iter()
                    .map(|a| convert::spec_from_pb(a, &self.default_cwd))
                    .collect::<Result<Vec<_>, _>>()?;
                let base =
                    convert::env_from_pb(req.client_env)?.unwrap_or_else(|| self.agent_env.clone());
                self.sup.create(specs, base, cause, !req.no_wait).await?
            }
            (true, false) => {
                let target = convert::target(&req.target)?;
                self.sup.start(&target, cause, !req.no_wait).await?
            }
            (false, false) => return Err(Error::TargetAndApps.into()),
            (true, true) => return Err(Error::NothingToStart.into()),
        };
        Ok(Response::new(pb::StartResponse {
            apps: self.acted(views),
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.stop(&target, origin(&req, "Stop")).await?;
        Ok(Response::new(pb::StopResponse {
            apps: self.acted(views),
        }))
    }

    async fn restart(
        &self,
        req: Request<pb::RestartRequest>,
    ) -> Result<Response<pb::RestartResponse>, Status> {
        let cause = origin(&req, "Restart");
        check_env_origin(&req, req.get_ref().client_env.is_some())?;
        let req = req.into_inner();
        let target = convert::target(&req.target)?;
        let sent = convert::env_from_pb(req.client_env)?;
        let base = if req.update_env {
            Some(sent.unwrap_or_else(|| self.agent_env.clone()))
        } else {
            None
        };
        let views = self.sup.restart(&target, base, cause, !req.no_wait).await?;
        Ok(Response::new(pb::RestartResponse {
            apps: self.acted(views),
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let cause = origin(&req, "Reload");
        let target = convert::target(&req.get_ref().target)?;
        let views = self
            .sup
            .reload(&target, req.get_ref().parallel.max(1), cause)
            .await?;
        Ok(Response::new(pb::ReloadResponse {
            apps: self.infos(views, true),
        }))
    }

    async fn scale(
        &self,
        req: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::ScaleResponse>, Status> {
        let cause = origin(&req, "Scale");
        let target = convert::target(&req.get_ref().target)?;
        let views = self
            .sup
            .scale(&target, req.get_ref().instances, cause)
            .await?;
        Ok(Response::new(pb::ScaleResponse {
            apps: self.infos(views, true),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let purge = req.get_ref().purge_logs;
        let views = self
            .sup
            .delete(&target, purge, origin(&req, "Delete"))
            .await?;
        Ok(Response::new(pb::DeleteResponse {
            apps: self.infos(views, false),
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let views = self.sup.list();
        Ok(Response::new(pb::ListResponse {
            apps: self.infos(views, true),
        }))
    }

    async fn describe(
        &self,
        req: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.describe(&target)?;
        let samples = self.sup.samples();
        Ok(Response::new(pb::DescribeResponse {
            apps: views
                .iter()
                .map(|v| convert::detail(v, Self::usage(&samples, v, true)))
                .collect(),
        }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let cause = match origin(&req, "Apply") {
            Cause::Request { uid, pid, peer, .. } => Cause::Apply { uid, pid, peer },
            other => other,
        };
        check_env_origin(&req, req.get_ref().client_env.is_some())?;
        let req = req.into_inner();
        if req.apps.len() > MAX_APPS_PER_REQUEST {
            return Err(Error::TooManyApps {
                count: req.apps.len(),
                max: MAX_APPS_PER_REQUEST,
            }
            .into());
        }
        let file = PathBuf::from(&req.file);
        if req.file.is_empty() || !file.is_absolute() || req.file.contains('\0') {
            return Err(Error::ApplyFile(req.file).into());
        }
        let specs = req
            .apps
            .into_iter()
            .map(|a| convert::spec_from_pb(a, &self.default_cwd))
            .collect::<Result<Vec<_>, _>>()?;
        let base_env =
            convert::env_from_pb(req.client_env)?.unwrap_or_else(|| self.agent_env.clone());
        let applied = self
            .sup
            .apply(
                ApplyRequest {
                    file,
                    specs,
                    base_env,
                    update_env: req.update_env,
                    prune: req.prune,
                    dry_run: req.dry_run,
                },
                cause,
                !req.no_wait,
            )
            .await?;
        Ok(Response::new(pb::ApplyResponse {
            plan: convert::plan_to_pb(&applied.plan),
            has_work: applied.plan.has_work(),
            apps: self.acted(applied.acted),
        }))
    }

    async fn upgrade(
        &self,
        _req: Request<pb::UpgradeRequest>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        tracing::info!("upgrade requested");
        let keeper_pid = self.sup.keeper_pid().unwrap_or(0);
        self.sup.hand_over().await?;
        // The answer goes out before the agent leaves.
        let token = self.hand_over.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            token.cancel();
        });
        Ok(Response::new(pb::UpgradeResponse {
            agent_pid: std::process::id(),
            keeper_pid,
        }))
    }

    async fn shutdown(
        &self,
        _req: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        self.sup.shutdown().await;
        self.shutdown.cancel();
        Ok(Response::new(pb::ShutdownResponse {
            agent_pid: std::process::id(),
        }))
    }
}

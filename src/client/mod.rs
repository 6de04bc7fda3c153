//! Talking to an agent in model terms: the local one over `$GRPM_HOME/agent.sock` (spawned
//! when none answers, see `local`) or a remote one over TCP (`remote`). [`Client`]'s calls take
//! and return model types and convert to and from the wire (through `rpc::convert`) themselves;
//! their errors are values ([`Error`]: a gRPC code, a dropped connection, a failed connect).
//! Used by the CLI, the tests and the benches.

mod error;
mod local;
mod remote;
mod stream;

pub use error::{chain, Code, ConnectError, Error, Transport};
pub use local::{
    connect_local, connect_local_with, connect_unix, connect_unix_with, process_alive,
};
pub use remote::{connect_remote, Timeouts};
pub use stream::{ChunkStream, EventStream, LogsQuery, Subscription};

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Request, Status,
};

use crate::{
    model::{AppDetail, AppDraft, AppInfo, Env, Event, Plan},
    rpc::{convert, pb, pb::process_manager_client::ProcessManagerClient},
};

/// The generated client, for callers that must send what the typed calls cannot express (a
/// test's hostile field).
pub type RawClient = ProcessManagerClient<InterceptedService<Channel, Credentials>>;

/// What every request carries: a bearer token for agents that want one.
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// `authorization: Bearer TOKEN`; fails on characters a header cannot carry.
    pub fn bearer(token: &str) -> Result<Credentials, String> {
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token has characters a header cannot carry".to_string())?;
        Ok(Credentials {
            bearer: Some(value),
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    }
}

/// Largest message a client decodes (a `list` of many apps) and encodes.
const MAX_DECODE: usize = 64 * 1024 * 1024;
const MAX_ENCODE: usize = 8 * 1024 * 1024;

/// A connection to one agent. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct Client {
    raw: RawClient,
    /// Start and restart answer once the apps are spawned, not once they are ready.
    no_wait: bool,
}

/// How a restart treats the apps' base environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum BaseEnv {
    /// Keep the environment the apps were created with.
    #[default]
    Keep,
    /// Replace it with the agent's own environment.
    Agent,
    /// Replace it with this one (the caller's; local agents only).
    This(Env),
}

impl std::fmt::Debug for BaseEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseEnv::Keep => f.write_str("Keep"),
            BaseEnv::Agent => f.write_str("Agent"),
            BaseEnv::This(env) => write!(f, "This({} variables)", env.len()),
        }
    }
}

type CallResult<T> = std::result::Result<T, Error>;

/// What an apply sends (see [`Client::apply`]).
#[derive(Debug, Clone, Default)]
pub struct ApplyCall {
    /// The app file, canonical and absolute: it names which apps are the file's.
    pub file: std::path::PathBuf,
    /// The file's apps, in its order.
    pub drafts: Vec<AppDraft>,
    /// The base environment for new apps (and with `update_env` for all of the file's);
    /// `None`: the agent's own.
    pub base_env: Option<Env>,
    pub update_env: bool,
    /// Delete the file's apps that it no longer lists.
    pub prune: bool,
    /// Only the plan.
    pub dry_run: bool,
}

fn infos(apps: Vec<pb::AppInfo>) -> Vec<AppInfo> {
    apps.into_iter().map(convert::info_from_pb).collect()
}

impl Client {
    fn new(channel: Channel, credentials: Credentials) -> Client {
        Client {
            raw: ProcessManagerClient::with_interceptor(channel, credentials)
                .max_decoding_message_size(MAX_DECODE)
                .max_encoding_message_size(MAX_ENCODE),
            no_wait: false,
        }
    }

    /// From now on, `start`, `start_target` and `restart` answer once the apps are spawned,
    /// without waiting for their readiness checks (`--no-wait`).
    pub fn set_no_wait(&mut self, no_wait: bool) {
        self.no_wait = no_wait;
    }

    /// The generated client on the same connection.
    pub fn raw(&mut self) -> &mut RawClient {
        &mut self.raw
    }

    /// Creates apps from `drafts` (in this order, so ids follow it; one bad draft creates none)
    /// and starts them. `base_env`: their base environment (`None`: the agent's own).
    pub async fn start(
        &mut self,
        drafts: &[AppDraft],
        base_env: Option<&Env>,
    ) -> CallResult<Vec<AppInfo>> {
        let req = pb::StartRequest {
            apps: drafts.iter().map(convert::draft_to_pb).collect(),
            client_env: base_env.map(convert::env_to_pb),
            no_wait: self.no_wait,
            ..Default::default()
        };
        Ok(infos(self.raw.start(req).await?.into_inner().apps))
    }

    /// Starts existing apps: a name, an id or "all".
    pub async fn start_target(&mut self, target: &str) -> CallResult<Vec<AppInfo>> {
        let req = pb::StartRequest {
            target: target.to_string(),
            no_wait: self.no_wait,
            ..Default::default()
        };
        Ok(infos(self.raw.start(req).await?.into_inner().apps))
    }

    /// Stops apps (their whole trees); returns when no process of them remains.
    pub async fn stop(&mut self, target: &str) -> CallResult<Vec<AppInfo>> {
        let req = pb::StopRequest {
            target: target.to_string(),
        };
        Ok(infos(self.raw.stop(req).await?.into_inner().apps))
    }

    /// Stops, then starts apps again; `base_env` says whether their base environment changes.
    pub async fn restart(&mut self, target: &str, base_env: BaseEnv) -> CallResult<Vec<AppInfo>> {
        let (update_env, client_env) = match &base_env {
            BaseEnv::Keep => (false, None),
            BaseEnv::Agent => (true, None),
            BaseEnv::This(env) => (true, Some(convert::env_to_pb(env))),
        };
        let req = pb::RestartRequest {
            target: target.to_string(),
            update_env,
            client_env,
            no_wait: self.no_wait,
        };
        Ok(infos(self.raw.restart(req).await?.into_inner().apps))
    }

    /// Stops apps and forgets them; `purge_logs` also removes their log files.
    pub async fn delete(&mut self, target: &str, purge_logs: bool) -> CallResult<Vec<AppInfo>> {
        let req = pb::DeleteRequest {
            target: target.to_string(),
            purge_logs,
        };
        Ok(infos(self.raw.delete(req).await?.into_inner().apps))
    }

    /// Replaces instances without downtime, `parallel` at a time (see the Reload RPC).
    pub async fn reload(&mut self, target: &str, parallel: u32) -> CallResult<Vec<AppInfo>> {
        let req = pb::ReloadRequest {
            target: target.to_string(),
            parallel,
        };
        Ok(infos(self.raw.reload(req).await?.into_inner().apps))
    }

    /// Sets how many instances an app runs.
    pub async fn scale(&mut self, target: &str, instances: u32) -> CallResult<Vec<AppInfo>> {
        let req = pb::ScaleRequest {
            target: target.to_string(),
            instances,
        };
        Ok(infos(self.raw.scale(req).await?.into_inner().apps))
    }

    /// Empties the log files of apps.
    pub async fn flush(&mut self, target: &str) -> CallResult<Vec<AppInfo>> {
        let req = pb::FlushRequest {
            target: target.to_string(),
        };
        Ok(infos(self.raw.flush(req).await?.into_inner().apps))
    }

    /// Every app, by id.
    pub async fn list(&mut self) -> CallResult<Vec<AppInfo>> {
        Ok(infos(
            self.raw.list(pb::ListRequest {}).await?.into_inner().apps,
        ))
    }

    /// Everything the agent knows about apps.
    pub async fn describe(&mut self, target: &str) -> CallResult<Vec<AppDetail>> {
        let req = pb::DescribeRequest {
            target: target.to_string(),
        };
        self.raw
            .describe(req)
            .await?
            .into_inner()
            .apps
            .into_iter()
            .map(|d| convert::detail_from_pb(d).map_err(Error::Malformed))
            .collect()
    }

    /// Publishes a `notify` event about each target app; returns the events.
    pub async fn notify(
        &mut self,
        target: &str,
        action: &str,
        message: &str,
        data: &Env,
    ) -> CallResult<Vec<Event>> {
        let req = pb::NotifyGodRequest {
            target: target.to_string(),
            action: action.to_string(),
            message: message.to_string(),
            data: data.clone().into_iter().collect(),
        };
        self.raw
            .notify_god(req)
            .await?
            .into_inner()
            .events
            .into_iter()
            .map(|e| convert::event_from_pb(e).map_err(Error::Malformed))
            .collect()
    }

    /// Events: the kept ones `sub` asks for, then (unless `sub.follow` is off) new ones.
    pub async fn subscribe(&mut self, sub: &Subscription) -> CallResult<EventStream> {
        let stream = self.raw.subscribe(sub.to_pb()).await?.into_inner();
        Ok(EventStream::new(stream))
    }

    /// Apps' output: the last lines, then (with `query.follow`) new output.
    pub async fn logs(&mut self, query: &LogsQuery) -> CallResult<ChunkStream> {
        let stream = self.raw.logs(query.to_pb()).await?.into_inner();
        Ok(ChunkStream::new(stream))
    }

    /// Makes the agent's apps match an app file (or, with `call.dry_run`, only says how it
    /// would): the plan, and the apps acted on.
    pub async fn apply(&mut self, call: &ApplyCall) -> CallResult<(Plan, Vec<AppInfo>)> {
        let req = pb::ApplyRequest {
            file: call.file.to_string_lossy().into_owned(),
            apps: call.drafts.iter().map(convert::draft_to_pb).collect(),
            client_env: call.base_env.as_ref().map(convert::env_to_pb),
            update_env: call.update_env,
            prune: call.prune,
            dry_run: call.dry_run,
            no_wait: self.no_wait,
        };
        let answer = self.raw.apply(req).await?.into_inner();
        let plan = convert::plan_from_pb(answer.plan).map_err(Error::Malformed)?;
        Ok((plan, infos(answer.apps)))
    }

    /// Stops every app and ends the agent; returns the agent's pid, to wait for it to be gone
    /// (see [`process_alive`]).
    /// Asks the local agent to hand over to the binary on disk; returns (agent pid, keeper
    /// pid).
    pub async fn upgrade(&mut self) -> CallResult<(u32, u32)> {
        let r = self.raw.upgrade(pb::UpgradeRequest {}).await?.into_inner();
        Ok((r.agent_pid, r.keeper_pid))
    }

    pub async fn shutdown(&mut self) -> CallResult<u32> {
        Ok(self
            .raw
            .shutdown(pb::ShutdownRequest {})
            .await?
            .into_inner()
            .agent_pid)
    }
}

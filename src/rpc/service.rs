//! The `grpm.v1.ProcessManager` service: thin; it validates, converts and calls the supervisor.

use std::{path::PathBuf, sync::Arc};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{convert, pb, pb::process_manager_server::ProcessManager};
use crate::{
    model::Env,
    supervisor::{AppView, Supervisor, Usage},
};

/// Bound on the apps one Start may create.
const MAX_APPS_PER_REQUEST: usize = 10_000;

pub struct Service {
    sup: Arc<Supervisor>,
    /// The agent's own environment: the base for apps whose creator sent none (remote callers,
    /// grpcurl).
    agent_env: Env,
    /// Where apps run when their spec names no cwd.
    default_cwd: PathBuf,
    /// Cancelled by `Shutdown` once every app is stopped.
    shutdown: CancellationToken,
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
        }
    }

    /// Listing fields for each view, sampling CPU and memory off the async threads.
    async fn infos(&self, views: Vec<AppView>, sample: bool) -> Vec<pb::AppInfo> {
        let usage = self.usage(&views, sample).await;
        views
            .iter()
            .zip(usage)
            .map(|(v, u)| convert::info(v, u))
            .collect()
    }

    async fn usage(&self, views: &[AppView], sample: bool) -> Vec<Usage> {
        if !sample {
            return vec![Usage::default(); views.len()];
        }
        let pids: Vec<u32> = views.iter().map(|v| v.status.pid().unwrap_or(0)).collect();
        let sup = self.sup.clone();
        tokio::task::spawn_blocking(move || sup.usage(&pids))
            .await
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl ProcessManager for Service {
    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let req = req.into_inner();
        let new_apps = match (req.app, req.apps.is_empty()) {
            (Some(app), true) => vec![app],
            (None, _) => req.apps,
            (Some(_), false) => {
                return Err(Status::invalid_argument("set app or apps, not both"));
            }
        };
        let views = match (new_apps.is_empty(), req.target.is_empty()) {
            (false, true) => {
                if new_apps.len() > MAX_APPS_PER_REQUEST {
                    return Err(Status::invalid_argument(format!(
                        "{} apps in one request; at most {MAX_APPS_PER_REQUEST} are allowed",
                        new_apps.len()
                    )));
                }
                let specs = new_apps
                    .into_iter()
                    .map(|a| convert::spec_from_pb(a, &self.default_cwd))
                    .collect::<Result<Vec<_>, _>>()?;
                let base =
                    convert::env_from_pb(req.client_env)?.unwrap_or_else(|| self.agent_env.clone());
                self.sup.create(specs, base).await?
            }
            (true, false) => {
                let target = convert::target(&req.target)?;
                self.sup.start(&target).await?
            }
            (false, false) => {
                return Err(Status::invalid_argument(
                    "set either target (existing apps) or app/apps (new apps), not both",
                ))
            }
            (true, true) => {
                return Err(Status::invalid_argument(
                    "set target (existing apps) or app/apps (new apps)",
                ))
            }
        };
        Ok(Response::new(pb::StartResponse {
            apps: self.infos(views, false).await,
        }))
    }

    async fn stop(
        &self,
        req: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.stop(&target).await?;
        Ok(Response::new(pb::StopResponse {
            apps: self.infos(views, false).await,
        }))
    }

    async fn restart(
        &self,
        req: Request<pb::RestartRequest>,
    ) -> Result<Response<pb::RestartResponse>, Status> {
        let req = req.into_inner();
        let target = convert::target(&req.target)?;
        let sent = convert::env_from_pb(req.client_env)?;
        let base = if req.update_env {
            Some(sent.unwrap_or_else(|| self.agent_env.clone()))
        } else {
            None
        };
        let views = self.sup.restart(&target, base).await?;
        Ok(Response::new(pb::RestartResponse {
            apps: self.infos(views, false).await,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.delete(&target).await?;
        Ok(Response::new(pb::DeleteResponse {
            apps: self.infos(views, false).await,
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let views = self.sup.list();
        Ok(Response::new(pb::ListResponse {
            apps: self.infos(views, true).await,
        }))
    }

    async fn describe(
        &self,
        req: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let target = convert::target(&req.get_ref().target)?;
        let views = self.sup.describe(&target)?;
        let usage = self.usage(&views, true).await;
        Ok(Response::new(pb::DescribeResponse {
            apps: views
                .iter()
                .zip(usage)
                .map(|(v, u)| convert::detail(v, u))
                .collect(),
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

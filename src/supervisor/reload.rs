//! Reload: each instance is replaced by a new one that is ready before the old one stops.
//!
//! The overlap is coordinated here, above the owners, rather than inside one owner's machine:
//! the replacement is an owner of its own (the same instance number, the other process slot,
//! the same log files), started and waited for like any start; once it is ready it takes the
//! instance's place in the registry and the old owner is retired (`Input::Retire`: stopped
//! with its stop signal and kill timeout, forgotten, its logs left open). Each owner stays a
//! machine of one process, and every rule of the overlap (what happens to an old instance
//! that crashes meanwhile, to a replacement that never becomes ready) is the ordinary rule of
//! one of the two owners.

use std::{sync::Arc, time::Duration};

use super::{
    lifecycle::{Cmd, Init},
    order::send,
    store::AppRecord,
    AppView, Error, Handle, Supervisor,
};
use crate::model::{AppSpec, Cause, Desired, Env, Event, EventKind, Status, Target};

/// What the replacements of a reload take in place of their instance's spec (`grpm apply`
/// of a changed app that reloads): the new spec, and with `--update-env` the new captured
/// environment.
#[derive(Clone)]
pub(super) struct Reshape {
    pub spec: AppSpec,
    pub base_env: Option<Arc<Env>>,
}

impl Supervisor {
    /// Replaces every instance `target` names that should run, `parallel` at a time, each new
    /// one ready before the one it replaces stops. Stops at the first replacement that does not
    /// become ready (it is stopped; the old instance keeps serving) and fails with its error.
    pub async fn reload(
        &self,
        target: &Target,
        parallel: u32,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        self.reload_as(target, parallel, None, cause).await
    }

    /// [`Supervisor::reload`], the replacements taking `reshape` (a new spec) when given.
    pub(super) async fn reload_as(
        &self,
        target: &Target,
        parallel: u32,
        reshape: Option<Reshape>,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        let _one_at_a_time = self.reshaping.lock().await;
        let handles: Vec<Handle> = self
            .handles(target)?
            .into_iter()
            .filter(|h| h.view.borrow().desired == Desired::Online)
            .collect();
        let mut apps: Vec<(u64, String)> = Vec::new();
        for h in &handles {
            let v = h.view.borrow();
            if !apps.iter().any(|(id, _)| *id == v.id) {
                apps.push((v.id, v.name().to_string()));
            }
        }
        for (id, name) in &apps {
            self.ctx
                .hub
                .publish(Event::new(EventKind::Reloading, *id, name, cause.clone()));
        }
        let mut done = Vec::new();
        let mut failed = None;
        for batch in handles.chunks(parallel.max(1) as usize) {
            let replaced = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|h| self.replace(h, reshape.as_ref(), &cause)),
            )
            .await;
            for r in replaced {
                match r {
                    Ok(v) => done.push(v),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if failed.is_some() {
                break;
            }
        }
        for (id, name) in &apps {
            let mut e = Event::new(EventKind::Reloaded, *id, name, cause.clone());
            e.error = failed.as_ref().map(ToString::to_string);
            self.ctx.hub.publish(e);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Replaces one instance: the replacement starts in the other slot and, once ready (or
    /// `reload_grace` after its spawn, without a readiness check), takes the old one's place.
    async fn replace(
        &self,
        old: &Handle,
        reshape: Option<&Reshape>,
        cause: &Cause,
    ) -> Result<AppView, Error> {
        let v = old.view.borrow().clone();
        let label = v.label();
        let rec = AppRecord {
            id: v.id,
            instance: v.instance,
            slot: v.slot ^ 1,
            spec: reshape.map_or_else(|| (*v.spec).clone(), |r| r.spec.clone()),
            base_env: reshape
                .and_then(|r| r.base_env.clone())
                .unwrap_or_else(|| v.base_env.clone()),
            desired: Desired::Stopped,
            created_at_unix_ms: v.created_at_unix_ms,
            restarts: v.restarts.saturating_add(1),
            pid: None,
            pid_starttime: None,
            last_exit: None,
        };
        let new = self.owner_with_logs(rec, Init::New, old.logs.clone(), None);
        let closed = {
            let mut reg = self.lock();
            if !reg.closed {
                reg.spares.push(new.clone());
            }
            reg.closed
        };
        if closed {
            let _ = send(&label, &new, |reply| Cmd::Retire {
                cause: cause.clone(),
                reply,
            })
            .await;
            return Err(Error::ShuttingDown);
        }
        let ready_check = reshape.map_or(v.spec.ready.is_some(), |r| r.spec.ready.is_some());
        let result = self
            .take_over(old, &new, &v, ready_check, &label, cause)
            .await;
        self.lock().spares.retain(|h| !h.tx.same_channel(&new.tx));
        result
    }

    /// Starts the replacement `new` of `old`, waits for it, and swaps it in.
    async fn take_over(
        &self,
        old: &Handle,
        new: &Handle,
        v: &AppView,
        ready_check: bool,
        label: &str,
        cause: &Cause,
    ) -> Result<AppView, Error> {
        let label = label.to_string();
        let new = new.clone();
        let started = send(&label, &new, |reply| Cmd::Start {
            cause: cause.clone(),
            wait: true,
            reply,
        })
        .await;
        let ready = match started {
            Ok(view) if !ready_check => self.grace(&new, &view, &label).await,
            other => other,
        };
        if let Err(e) = ready {
            let _ = send(&label, &new, |reply| Cmd::Retire {
                cause: cause.clone(),
                reply,
            })
            .await;
            return Err(e);
        }
        let swapped = {
            let mut reg = self.lock();
            match reg.apps.get(&(v.id, v.instance)) {
                Some(h) if h.tx.same_channel(&old.tx) => {
                    reg.apps.insert((v.id, v.instance), new.clone());
                    true
                }
                _ => false,
            }
        };
        if !swapped {
            let _ = send(&label, &new, |reply| Cmd::Retire {
                cause: cause.clone(),
                reply,
            })
            .await;
            return Err(Error::ReloadInterrupted {
                app: label,
                why: "the instance was deleted or scaled away".into(),
            });
        }
        send(&label, old, |reply| Cmd::Retire {
            cause: cause.clone(),
            reply,
        })
        .await?;
        let view = new.view.borrow().clone();
        Ok(view)
    }

    /// Without a readiness check: the replacement must still run after `reload_grace`.
    async fn grace(&self, new: &Handle, started: &AppView, label: &str) -> Result<AppView, Error> {
        let pid = started.status.pid();
        let grace: Duration = started.spec.reload_grace;
        let mut view = new.view.clone();
        let left = tokio::time::timeout(
            grace,
            view.wait_for(|v| !matches!(v.status, Status::Online { .. }) || v.status.pid() != pid),
        )
        .await;
        match left {
            Err(_) => Ok(new.view.borrow().clone()),
            Ok(_) => {
                let now = new.view.borrow().clone();
                let how = now.last_exit.map_or_else(
                    || "it stopped".to_string(),
                    |e| format!("exited: {}", e.text()),
                );
                Err(Error::NotReady {
                    app: label.to_string(),
                    cause: format!(
                        "did not last its reload_grace ({}ms): {how}",
                        grace.as_millis()
                    ),
                })
            }
        }
    }
}

//! Scaling: how many instances an app runs. New instances are new owners (started when the app
//! runs); the highest-numbered ones are retired (stopped and forgotten; their log files stay).

use std::sync::Arc;

use super::{
    lifecycle::{Cmd, Init},
    order::{send, send_all},
    store::AppRecord,
    AppView, Error, Supervisor,
};
use crate::model::{Cause, Desired, Event, EventKind, Target};

impl Supervisor {
    /// Sets the number of instances of the app `target` names (a name or an id). Persisted;
    /// a `scaled` event says from what to what.
    pub async fn scale(
        &self,
        target: &Target,
        instances: u32,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        if !matches!(target, Target::Name(_) | Target::Id(_)) {
            return Err(Error::ScaleTarget(target.to_string()));
        }
        let _one_at_a_time = self.reshaping.lock().await;
        let handles = self.handles(target)?;
        let first = handles[0].view.borrow().clone();
        let mut spec = (*first.spec).clone();
        spec.instances = instances;
        spec.check()?;
        let name = spec.name.clone();
        let from = handles.len() as u32;
        if from == instances {
            return self.describe(target);
        }
        let keep = handles.len().min(instances as usize);
        for h in &handles[..keep] {
            send(&name, h, |reply| Cmd::Rescale { instances, reply }).await?;
        }
        let result = if instances > from {
            let runs = handles
                .iter()
                .any(|h| h.view.borrow().desired == Desired::Online);
            let mut new = Vec::new();
            for instance in from..instances {
                let rec = AppRecord {
                    id: first.id,
                    instance,
                    slot: 2 * instance,
                    spec: spec.clone(),
                    base_env: Arc::clone(&first.base_env),
                    desired: Desired::Stopped,
                    created_at_unix_ms: first.created_at_unix_ms,
                    restarts: 0,
                    pid: None,
                    pid_starttime: None,
                    last_exit: None,
                };
                let gen = self.ctx.store.put(rec.clone());
                let handle = self.start_owner(rec, Init::New, None);
                self.lock()
                    .apps
                    .insert((first.id, instance), handle.clone());
                if let Err(cause) = self.ctx.store.flushed(gen).await {
                    return Err(Error::Persist { app: name, cause });
                }
                new.push(handle);
            }
            if runs {
                send_all(&name, &new, |reply| Cmd::Start {
                    cause: cause.clone(),
                    wait: true,
                    reply,
                })
                .await
                .map(drop)
            } else {
                Ok(())
            }
        } else {
            let gone = &handles[keep..];
            let retired = send_all(&name, gone, |reply| Cmd::Retire {
                cause: cause.clone(),
                reply,
            })
            .await;
            self.lock()
                .apps
                .retain(|(id, i), _| *id != first.id || *i < instances);
            retired.map(drop)
        };
        let mut e = Event::new(EventKind::Scaled, first.id, &name, cause);
        e.message = format!("{from} -> {instances} instances");
        self.ctx.hub.publish(e);
        result?;
        self.describe(target)
    }
}

//! `grpm apply`: making the apps match an app file. The plan (what each app of the file
//! becomes: created, changed, started, unchanged; and which of the file's apps are pruned) is
//! computed from the apps as they are, under the registry's lock, and checked as a whole before
//! anything is touched; a dry run stops there. Then: new apps are created, pruned ones deleted
//! (dependents first), changed ones restarted with their new spec (with the running apps that
//! depend on them, as `restart` does), and new and stopped ones started, all in dependency
//! order.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::PathBuf,
    sync::Arc,
};

use super::{
    admit, deps,
    lifecycle::Cmd,
    order::{Act, Member, Table},
    Acted, AppView, Error, Reason, Supervisor,
};
use crate::model::{
    diff_env, diff_specs, AppSpec, Cause, Desired, Env, Plan, PlanAction, PlanEntry, Status, Target,
};

/// What to apply.
pub struct ApplyRequest {
    /// The app file (canonical, absolute): its apps are the ones whose spec names it.
    pub file: PathBuf,
    /// The file's apps, in its order; each is stored with `file`.
    pub specs: Vec<AppSpec>,
    /// The captured environment of new apps (and, with `update_env`, of every app of the file).
    pub base_env: Env,
    pub update_env: bool,
    /// Delete the file's apps that it no longer lists.
    pub prune: bool,
    /// Compute the plan only.
    pub dry_run: bool,
}

/// What applying did: the plan, and the apps acted on (none for a dry run).
pub struct Applied {
    pub plan: Plan,
    pub acted: Vec<Acted>,
}

/// How a changed app takes its new spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rollout {
    /// Exactly stop + start with the new spec (with the running apps that depend on it).
    Restart,
    /// Each instance replaced by one with the new spec that is ready before the old one stops
    /// (see `reload`): no downtime, so its dependents are left alone.
    Reload,
}

/// Decides how `old` (one of its instances, as it is) takes `new`: an app that runs several
/// instances or holds sockets is reloaded, when it runs and keeps its instance count and its
/// sockets (a new count is a scale, new sockets are bound anew: both restart it); every other
/// app is restarted.
pub(super) fn rollout(old: &AppView, new: &AppSpec) -> Rollout {
    let runs = old.desired == Desired::Online && matches!(old.status, Status::Online { .. });
    let shape_kept = old.spec.instances == new.instances && old.spec.sockets == new.sockets;
    let reloadable = new.instances > 1 || !new.sockets.is_empty();
    if runs && shape_kept && reloadable {
        Rollout::Reload
    } else {
        Rollout::Restart
    }
}

/// The plan and what it needs to be carried out.
struct Decided {
    plan: Plan,
    /// Changed apps, by name, with their new spec.
    changed: BTreeMap<String, AppSpec>,
    /// Unchanged apps that are down, to start.
    to_start: Vec<String>,
    /// New apps, in the file's order.
    new: Vec<AppSpec>,
    /// The file's apps it no longer lists (only with `prune`).
    pruned: Vec<String>,
}

/// An unchanged app that apply starts: stopped or errored, except a one-shot job (autorestart
/// off) whose last run exited 0, which has done its work.
fn wants_start(v: &AppView) -> bool {
    match v.status {
        Status::Errored { .. } => true,
        Status::Stopped => {
            let completed = !v.spec.autorestart && v.last_exit.is_some_and(|e| e.success());
            !completed
        }
        _ => false,
    }
}

/// Decides what applying `req` to the apps `views` does; refuses names that belong to no
/// file or another one, and dependency graphs that would break.
fn decide(req: &ApplyRequest, views: &[AppView]) -> Result<Decided, Error> {
    let by_name: BTreeMap<&str, &AppView> = views.iter().map(|v| (v.name(), v)).collect();
    let mut d = Decided {
        plan: Plan::default(),
        changed: BTreeMap::new(),
        to_start: Vec::new(),
        new: Vec::new(),
        pruned: Vec::new(),
    };
    for spec in &req.specs {
        let Some(v) = by_name.get(spec.name.as_str()) else {
            d.plan.entries.push(PlanEntry {
                name: spec.name.clone(),
                id: None,
                action: PlanAction::Create,
                changes: Vec::new(),
            });
            d.new.push(spec.clone());
            continue;
        };
        if v.spec.file.as_deref() != Some(req.file.as_path()) {
            return Err(Error::NotTheFiles {
                name: spec.name.clone(),
                id: v.id,
                file: req.file.clone(),
                owner: v.spec.file.clone(),
            });
        }
        let mut changes = diff_specs(&v.spec, spec);
        if req.update_env {
            changes.extend(diff_env("captured_env", &v.base_env, &req.base_env));
        }
        let action = if !changes.is_empty() {
            d.changed.insert(spec.name.clone(), spec.clone());
            PlanAction::Change
        } else if wants_start(v) {
            d.to_start.push(spec.name.clone());
            PlanAction::Start
        } else {
            PlanAction::Unchanged
        };
        d.plan.entries.push(PlanEntry {
            name: spec.name.clone(),
            id: Some(v.id),
            action,
            changes,
        });
    }
    let listed: HashSet<&str> = req.specs.iter().map(|s| s.name.as_str()).collect();
    if req.prune {
        // One view per app (its first instance).
        for v in views.iter().filter(|v| v.instance == 0) {
            if v.spec.file.as_deref() == Some(req.file.as_path()) && !listed.contains(v.name()) {
                d.pruned.push(v.name().to_string());
                d.plan.entries.push(PlanEntry {
                    name: v.name().to_string(),
                    id: Some(v.id),
                    action: PlanAction::Delete,
                    changes: Vec::new(),
                });
            }
        }
    }
    // The graph as it will be: the file's specs replace the stored ones.
    let pruned: BTreeSet<String> = d.pruned.iter().cloned().collect();
    let after = |with_pruned: bool| {
        deps::Graph::new(
            views
                .iter()
                .filter(|v| !listed.contains(v.name()))
                .filter(|v| with_pruned || !pruned.contains(v.name()))
                .map(|v| (v.name().to_string(), v.spec.depends_on.clone()))
                .chain(
                    req.specs
                        .iter()
                        .map(|s| (s.name.clone(), s.depends_on.clone())),
                ),
        )
    };
    let refused: Vec<Error> = after(true)
        .still_needed(&pruned)
        .into_iter()
        .map(|(app, by)| Error::DependedOn { app, by })
        .collect();
    super::order::verdict((), refused)?;
    let names: Vec<&str> = req.specs.iter().map(|s| s.name.as_str()).collect();
    after(false).check(&names)?;
    Ok(d)
}

impl Supervisor {
    /// Makes the apps match an app file (see the module's doc). With `req.dry_run`, only the
    /// plan. All or nothing up to the first action: an invalid spec, a name another file's
    /// (or no file's) app has, a broken dependency, or a pruned app still needed changes
    /// nothing. Failures to start are returned after every app was acted on, as `start` does.
    pub async fn apply(
        &self,
        mut req: ApplyRequest,
        cause: Cause,
        wait: bool,
    ) -> Result<Applied, Error> {
        crate::model::validate_env(&req.base_env).map_err(|problem| Error::InvalidEnv {
            what: "base environment",
            problem,
        })?;
        for s in &mut req.specs {
            s.file = Some(req.file.clone());
        }
        admit(&req.specs)?;
        let base_env = Arc::new(std::mem::take(&mut req.base_env));
        req.base_env = (*base_env).clone();
        let (decided, views, table) = {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            let views: Vec<AppView> = reg.apps.values().map(|h| h.view.borrow().clone()).collect();
            let mut decided = decide(&req, &views)?;
            if req.dry_run {
                return Ok(Applied {
                    plan: decided.plan,
                    acted: Vec::new(),
                });
            }
            let new = std::mem::take(&mut decided.new);
            // Held sockets of new apps are bound before anything is created: one that cannot
            // be bound fails the request with the OS error and changes nothing.
            let bound = new
                .iter()
                .map(|s| {
                    (!s.sockets.is_empty())
                        .then(|| super::sockets::bind_all(&s.sockets))
                        .transpose()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(Error::Bind)?;
            reg.refuse_deleting(&new)?;
            self.register(&mut reg, new, bound, &base_env, &cause);
            (decided, views, Table::of(reg.apps.values()))
        };
        let Decided {
            plan,
            changed,
            to_start,
            pruned,
            ..
        } = decided;
        let mut errors = Vec::new();
        // Pruned first, dependents first: what a new app takes over (a port) is free.
        if !pruned.is_empty() {
            let members = pruned.into_iter().map(|n| (n, Reason::Named)).collect();
            let deleted = self
                .in_reverse(&table, members, |reply| Cmd::Delete {
                    purge_logs: false,
                    cause: cause.clone(),
                    reply,
                })
                .await;
            self.forget_deleted();
            if let Err(e) = deleted {
                errors.push(e);
            }
        }
        let old: BTreeMap<&str, &AppView> = views
            .iter()
            .filter(|v| v.instance == 0)
            .map(|v| (v.name(), v))
            .collect();
        // How each changed app takes its new spec; a new instance count first becomes a
        // scale, and new sockets are bound anew by the restart (the old set is closed).
        let mut reloads: Vec<(u64, AppSpec)> = Vec::new();
        let mut restarted: Vec<String> = Vec::new();
        for (name, spec) in &changed {
            let Some(v) = old.get(name.as_str()) else {
                continue;
            };
            match rollout(v, spec) {
                Rollout::Reload => reloads.push((v.id, spec.clone())),
                Rollout::Restart => {
                    if v.spec.instances != spec.instances {
                        let target = Target::Id(v.id);
                        if let Err(e) = self.scale(&target, spec.instances, cause.clone()).await {
                            errors.push(e);
                        }
                    }
                    if v.spec.sockets != spec.sockets {
                        self.ctx.sockets.release(v.id);
                    }
                    restarted.push(name.clone());
                }
            }
        }
        // Restarted apps and the running apps that depend on them: the dependents stopped
        // first (deepest first), then all started again in dependency order.
        let table = self.table()?;
        let restarting = table.with_dependents(&restarted);
        let set: BTreeSet<String> = restarting.keys().cloned().collect();
        let first: BTreeMap<String, Reason> = restarting
            .iter()
            .filter(|(n, _)| table.graph.depends_on_any(n, &set))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        if !first.is_empty() {
            if let Err(e) = self
                .in_reverse(&table, first, |reply| Cmd::StopForRestart {
                    cause: cause.clone(),
                    reply,
                })
                .await
            {
                errors.push(e);
            }
        }
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for (name, reason) in restarting {
            let act = match changed.get(&name) {
                Some(spec) => Act::Restart {
                    base_env: req.update_env.then(|| req.base_env.clone()),
                    spec: Some(Box::new(spec.clone())),
                },
                None => Act::Restart {
                    base_env: None,
                    spec: None,
                },
            };
            members.insert(name, Member { act, reason });
        }
        let created = plan
            .entries
            .iter()
            .filter(|e| e.action == PlanAction::Create)
            .map(|e| e.name.clone());
        for name in created.chain(to_start) {
            members.insert(
                name,
                Member {
                    act: Act::Start,
                    reason: Reason::Named,
                },
            );
        }
        let mut acted = Vec::new();
        if !members.is_empty() {
            // Ordered by the dependencies as they will be (the new specs').
            let mut table = self.table()?;
            let overrides: BTreeMap<&str, &AppSpec> =
                changed.iter().map(|(n, s)| (n.as_str(), s)).collect();
            table.graph = deps::Graph::new(table.apps.iter().map(|(n, h)| {
                let deps = match (overrides.get(n.as_str()), h.first()) {
                    (Some(s), _) => s.depends_on.clone(),
                    (None, Some(h)) => h.view.borrow().spec.depends_on.clone(),
                    (None, None) => Vec::new(),
                };
                (n.clone(), deps)
            }));
            match self
                .start_in_order(table, members, cause.clone(), wait)
                .await
            {
                Ok(a) => acted = a,
                Err(Error::Several(all)) => errors.extend(all),
                Err(e) => errors.push(e),
            }
        }
        // Reloaded apps last, once what they depend on runs: each instance is replaced by one
        // with the new spec, ready before the old one stops.
        let base_env = req.update_env.then(|| Arc::new(req.base_env.clone()));
        for (id, spec) in reloads {
            let target = Target::Id(id);
            let reshaped = super::reload::Reshape {
                spec,
                base_env: base_env.clone(),
            };
            match self
                .reload_as(&target, 1, Some(reshaped), cause.clone())
                .await
            {
                Ok(views) => acted.extend(views.into_iter().map(|view| Acted {
                    view,
                    reason: Reason::Named,
                })),
                Err(e) => errors.push(e),
            }
        }
        super::order::verdict(Applied { plan, acted }, errors)
    }
}

//! Acting on apps in dependency order. `deps` decides what a request touches and in which
//! order; this file sends the commands to the apps' owners and waits for each dependency's
//! condition:
//!
//! - A start is a small dataflow: one task per app, which waits for the conditions of what the
//!   app depends on (all at once; the first failure wins), then sends its command. Independent
//!   branches run in parallel, and an app starts as soon as its own dependencies are met.
//! - A stop goes by depth, deepest first: the apps that depend on others stop before them.
//!
//! The tasks are spawned, so what a request set in motion completes even if its caller leaves.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::{oneshot, watch};

use super::{
    deps::{Graph, GraphError},
    lifecycle::{Cmd, Reply},
    AppView, Error, Handle, Supervisor,
};
use crate::model::{AppSpec, Cause, Condition, Env, Status};

/// An app a request acted on, and why it did.
#[derive(Debug, Clone)]
pub struct Acted {
    pub view: AppView,
    pub reason: Reason,
}

/// Why a request acted on an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The request's target named it.
    Named,
    /// Started first because this app, which the request started, depends on it.
    NeededBy(String),
    /// Stopped first (and, for a restart, started again after) because it depends on this
    /// app, which the request stopped.
    DependsOn(String),
}

/// The apps as they are now: the graph of their names, and the handles of their instances
/// (in instance order). Dependencies see an app as a whole: it is started, ready or completed
/// when all of its instances are.
pub(super) struct Table {
    pub graph: Graph,
    pub apps: BTreeMap<String, Vec<Handle>>,
}

impl Table {
    pub fn of<'a>(handles: impl IntoIterator<Item = &'a Handle>) -> Table {
        let mut apps: BTreeMap<String, Vec<Handle>> = BTreeMap::new();
        let mut deps = Vec::new();
        for h in handles {
            let v = h.view.borrow();
            let group = apps.entry(v.name().to_string()).or_default();
            if group.is_empty() {
                deps.push((v.name().to_string(), v.spec.depends_on.clone()));
            }
            group.push(h.clone());
        }
        Table {
            graph: Graph::new(deps),
            apps,
        }
    }

    fn statuses(&self, name: &str) -> Vec<Status> {
        self.apps
            .get(name)
            .into_iter()
            .flatten()
            .map(|h| h.view.borrow().status.clone())
            .collect()
    }

    /// Every instance runs (its main process exists and is not being stopped).
    fn runs(&self, name: &str) -> bool {
        let all = self.statuses(name);
        !all.is_empty()
            && all
                .iter()
                .all(|s| matches!(s, Status::Online { .. } | Status::Starting { pid: Some(_) }))
    }

    /// An instance runs or will run again by itself (an autorestart is pending, or it is
    /// queued): what a stop of its dependency takes with it.
    fn active(&self, name: &str) -> bool {
        self.statuses(name)
            .iter()
            .any(|s| !matches!(s, Status::Stopped | Status::Errored { .. }))
    }

    /// The apps of `named` and those that depend on them and are active, each with why.
    pub fn with_dependents(&self, named: &[String]) -> BTreeMap<String, Reason> {
        let roots: BTreeSet<String> = named.iter().cloned().collect();
        let mut members: BTreeMap<String, Reason> =
            named.iter().map(|n| (n.clone(), Reason::Named)).collect();
        for d in self.graph.dependents(&roots) {
            if self.active(&d) {
                let on = named
                    .iter()
                    .find(|n| self.graph.depends_on_any(&d, &[(*n).clone()].into()))
                    .cloned()
                    .unwrap_or_default();
                members.insert(d, Reason::DependsOn(on));
            }
        }
        members
    }

    /// `set` in depth order; a graph with a cycle (only a hand-edited state file can have one)
    /// is taken as one level rather than not at all.
    pub fn levels(&self, set: &BTreeSet<String>) -> Vec<Vec<String>> {
        let mut levels = self
            .graph
            .levels(set)
            .unwrap_or_else(|_| vec![set.iter().cloned().collect()]);
        // Within a level, by id: the order apps were created in.
        let id = |n: &String| {
            self.apps
                .get(n)
                .and_then(|g| g.first())
                .map_or(0, |h| h.view.borrow().id)
        };
        for l in &mut levels {
            l.sort_by_key(id);
        }
        levels
    }
}

/// What a start sends an app.
#[derive(Clone)]
pub(super) enum Act {
    Start,
    /// A new agent's turn to start an app it queued (see `Cmd::Resume`).
    Resume,
    /// Stop + start (stopped already, for a restart's dependents); with `base_env`, the
    /// captured environment is replaced first; with `spec`, the new instance runs with it.
    Restart {
        base_env: Option<Env>,
        spec: Option<Box<AppSpec>>,
    },
}

/// An app a start or restart acts on.
pub(super) struct Member {
    pub act: Act,
    pub reason: Reason,
}

/// One app of a start, as its dependents see it.
#[derive(Clone)]
struct Node {
    name: String,
    /// Its instances'.
    views: Vec<watch::Receiver<AppView>>,
    /// Its command waits for readiness (so its answer comes at ready, not at spawn).
    waits: bool,
    /// Completed already, and only needed completed: nothing is sent to it.
    skip: bool,
    /// Its command's answer (one view per instance), once there is one.
    outcome: watch::Receiver<Option<Result<Vec<AppView>, Error>>>,
}

impl Node {
    async fn outcome(&self) -> Result<Vec<AppView>, Error> {
        let mut rx = self.outcome.clone();
        let answer = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        answer.unwrap_or_else(|| Err(Error::NotFound(self.name.clone())))
    }

    /// Waits until `condition` holds for this app, or cannot any more.
    async fn meets(&self, condition: Condition) -> Result<(), Error> {
        match condition {
            Condition::Ready => self.outcome().await.map(drop),
            Condition::Started if self.waits => {
                // Its command answers at ready; every instance spawned is enough here.
                let all_spawned = async {
                    for view in &self.views {
                        let mut view = view.clone();
                        view.wait_for(|v| spawned(&v.status)).await?;
                    }
                    Ok::<(), watch::error::RecvError>(())
                };
                tokio::select! {
                    r = self.outcome() => r.map(drop),
                    Ok(()) = all_spawned => Ok(()),
                }
            }
            Condition::Started => self.outcome().await.map(drop),
            Condition::Completed if self.skip => Ok(()),
            Condition::Completed => {
                self.outcome().await?;
                self.completed().await
            }
        }
    }

    /// Once spawned: waits until every instance has ended (its whole tree, not just the main
    /// process), and says whether each exited 0.
    async fn completed(&self) -> Result<(), Error> {
        for view in &self.views {
            self.one_completed(view.clone()).await?;
        }
        Ok(())
    }

    async fn one_completed(&self, mut view: watch::Receiver<AppView>) -> Result<(), Error> {
        // Watched from its spawn on (its command answered), so any end seen is this run's.
        let end = view
            .wait_for(|v| {
                matches!(
                    v.status,
                    Status::Stopped | Status::Errored { .. } | Status::Backoff { .. }
                )
            })
            .await
            .map(|v| (v.last_exit, v.error.clone()));
        let why = match end {
            Err(_) => "it was deleted before it completed".to_string(),
            Ok((Some(e), _)) if e.success() => return Ok(()),
            Ok((Some(e), _)) => format!("exited with {}", e.text()),
            Ok((None, error)) => {
                error.unwrap_or_else(|| "it was stopped before it completed".into())
            }
        };
        Err(Error::NotCompleted {
            app: self.name.clone(),
            why,
        })
    }
}

/// A main process exists and is not being stopped.
fn spawned(s: &Status) -> bool {
    matches!(s, Status::Online { .. } | Status::Starting { pid: Some(_) })
}

/// Sends one command to each instance of an app at once and waits for their answers.
pub(super) async fn send_all(
    name: &str,
    handles: &[Handle],
    make: impl Fn(Reply) -> Cmd,
) -> Result<Vec<AppView>, Error> {
    let answers =
        futures_util::future::join_all(handles.iter().map(|h| send(name, h, &make))).await;
    let mut views = Vec::new();
    let mut errors = Vec::new();
    for a in answers {
        match a {
            Ok(v) => views.push(v),
            Err(e) => errors.push(e),
        }
    }
    verdict(views, errors)
}

/// Sends one command to an instance's owner and waits for its answer.
pub(super) async fn send(
    name: &str,
    handle: &Handle,
    make: impl FnOnce(Reply) -> Cmd,
) -> Result<AppView, Error> {
    let (reply, rx) = oneshot::channel();
    // A closed queue means the app was deleted meanwhile.
    if handle.tx.send(make(reply)).await.is_err() {
        return Err(Error::NotFound(name.to_string()));
    }
    rx.await
        .unwrap_or_else(|_| Err(Error::NotFound(name.to_string())))
}

/// One error, several, or none.
pub(super) fn verdict<T>(ok: T, mut errors: Vec<Error>) -> Result<T, Error> {
    match errors.len() {
        0 => Ok(ok),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Several(errors)),
    }
}

impl Supervisor {
    /// The apps as they are now.
    pub(super) fn table(&self) -> Result<Table, Error> {
        let reg = self.lock();
        if reg.closed {
            return Err(Error::ShuttingDown);
        }
        Ok(Table::of(reg.apps.values()))
    }

    /// The apps as a request for `target` sees them: a target of one instance (`api:1`) sees
    /// that app as this instance alone.
    pub(super) fn table_for(&self, target: &crate::model::Target) -> Result<Table, Error> {
        let crate::model::Target::Instance(..) = target else {
            return self.table();
        };
        let only = self.handles(target)?;
        let Some((id, k)) = only.first().map(|h| {
            let v = h.view.borrow();
            (v.id, v.instance)
        }) else {
            return self.table();
        };
        let reg = self.lock();
        Ok(Table::of(
            reg.apps
                .iter()
                .filter(|((app, i), _)| *app != id || *i == k)
                .map(|(_, h)| h),
        ))
    }

    /// The names of the apps `handles` found for a target (each once).
    pub(super) fn names(handles: &[Handle]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for h in handles {
            let name = h.view.borrow().name().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Starts `members` (or restarts them, as each says) after what they depend on, which is
    /// started too when it does not run. With `wait`, the members' answers come once they are
    /// ready; a dependency is waited for as its dependents' conditions say either way. A member
    /// whose dependency fails is not started and fails with the chain.
    pub(super) async fn start_in_order(
        &self,
        table: Table,
        members: BTreeMap<String, Member>,
        cause: Cause,
        wait: bool,
    ) -> Result<Vec<Acted>, Error> {
        let graph = &table.graph;
        // An app that runs already had its dependencies met when it started.
        let expand = |name: &str| match members.get(name) {
            Some(Member {
                act: Act::Restart { .. },
                ..
            }) => true,
            _ => !table.runs(name),
        };
        let roots: Vec<String> = members.keys().cloned().collect();
        let needed = graph.needed(&roots, expand);
        if let Some(cycle) = graph.cycle_from(needed.iter().map(String::as_str)) {
            return Err(GraphError::Cycle(cycle).into());
        }
        let expanded: BTreeSet<String> = needed.iter().filter(|n| expand(n)).cloned().collect();
        let levels = table.levels(&needed);
        // What each app is needed for, by the apps that will start.
        let mut wanted: BTreeMap<&str, Vec<Condition>> = BTreeMap::new();
        for app in &expanded {
            for d in graph.deps_of(app) {
                wanted.entry(d.app.as_str()).or_default().push(d.condition);
            }
        }
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        for name in levels.iter().flatten() {
            let Some(handles) = table.apps.get(name).cloned() else {
                continue;
            };
            let member = members.get(name);
            let wanted = wanted.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            let waits = (member.is_some() && wait) || wanted.contains(&Condition::Ready);
            let skip = member.is_none()
                && wanted.iter().all(|c| *c == Condition::Completed)
                && handles.iter().all(|h| {
                    let view = h.view.borrow();
                    view.status == Status::Stopped && view.last_exit.is_some_and(|e| e.success())
                });
            let deps: Vec<(String, Condition, Option<Node>)> = if expanded.contains(name) {
                graph
                    .deps_of(name)
                    .iter()
                    .map(|d| (d.app.clone(), d.condition, nodes.get(&d.app).cloned()))
                    .collect()
            } else {
                Vec::new()
            };
            let (tx, outcome) = watch::channel(None);
            let views: Vec<_> = handles.iter().map(|h| h.view.clone()).collect();
            let act = member.map_or(Act::Start, |m| m.act.clone());
            let (app, cause) = (name.clone(), cause.clone());
            tokio::spawn(async move {
                let result = async {
                    let conditions = deps.into_iter().map(|(dep, condition, node)| {
                        let app = app.clone();
                        async move {
                            let met = match node {
                                Some(n) => n.meets(condition).await,
                                None => Err(Error::NotFound(dep.clone())),
                            };
                            met.map_err(|cause| Error::NotStarted {
                                app,
                                dep,
                                condition,
                                cause: Box::new(cause),
                            })
                        }
                    });
                    futures_util::future::try_join_all(conditions).await?;
                    if skip {
                        return Ok(handles.iter().map(|h| h.view.borrow().clone()).collect());
                    }
                    send_all(&app, &handles, |reply| match act.clone() {
                        Act::Start => Cmd::Start {
                            cause: cause.clone(),
                            wait: waits,
                            reply,
                        },
                        Act::Resume => Cmd::Resume { reply },
                        Act::Restart { base_env, spec } => Cmd::Restart {
                            base_env,
                            spec,
                            cause: cause.clone(),
                            wait: waits,
                            reply,
                        },
                    })
                    .await
                }
                .await;
                let _ = tx.send(Some(result));
            });
            nodes.insert(
                name.clone(),
                Node {
                    name: name.clone(),
                    views,
                    waits,
                    skip,
                    outcome,
                },
            );
        }
        // The answer: the members, and the dependencies this start started, in start order.
        let mut acted = Vec::new();
        let mut errors = Vec::new();
        for name in levels.iter().flatten() {
            let Some(node) = nodes.get(name) else {
                continue;
            };
            let result = node.outcome().await;
            let reason = match members.get(name) {
                Some(m) => m.reason.clone(),
                None if node.skip || !expanded.contains(name) => continue,
                None => {
                    let one: BTreeSet<String> = [name.clone()].into();
                    let by = roots
                        .iter()
                        .find(|r| graph.depends_on_any(r, &one))
                        .cloned()
                        .unwrap_or_default();
                    Reason::NeededBy(by)
                }
            };
            match (result, &reason) {
                (Ok(views), _) => acted.extend(views.into_iter().map(|view| Acted {
                    view,
                    reason: reason.clone(),
                })),
                // A dependency's failure is in its dependents' chains.
                (Err(_), Reason::NeededBy(_)) => {}
                (Err(e), _) => errors.push(e),
            }
        }
        verdict(acted, errors)
    }

    /// Sends each app of `members` the command `make` builds, deepest first (an app before
    /// what it depends on), each depth at once. Every app is acted on, also after a failure.
    pub(super) async fn in_reverse(
        &self,
        table: &Table,
        members: BTreeMap<String, Reason>,
        make: impl Fn(Reply) -> Cmd,
    ) -> Result<Vec<Acted>, Error> {
        let set: BTreeSet<String> = members.keys().cloned().collect();
        let mut acted = Vec::new();
        let mut errors = Vec::new();
        for level in table.levels(&set).into_iter().rev() {
            let mut waits = Vec::new();
            for name in level {
                for h in table.apps.get(&name).into_iter().flatten() {
                    let (reply, rx) = oneshot::channel();
                    if h.tx.send(make(reply)).await.is_ok() {
                        waits.push((name.clone(), rx));
                    }
                }
            }
            for (name, rx) in waits {
                match rx.await {
                    Ok(Ok(view)) => acted.push(Acted {
                        view,
                        reason: members.get(&name).cloned().unwrap_or(Reason::Named),
                    }),
                    Ok(Err(e)) => errors.push(e),
                    Err(_) => errors.push(Error::NotFound(name)),
                }
            }
        }
        verdict(acted, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_error_names_each_link_once() {
        let db = Error::NotReady {
            app: "db".into(),
            cause: "not ready after 1s: 127.0.0.1:1: connection refused".into(),
        };
        let api = Error::NotStarted {
            app: "api".into(),
            dep: "db".into(),
            condition: Condition::Ready,
            cause: Box::new(db),
        };
        let web = Error::NotStarted {
            app: "web".into(),
            dep: "api".into(),
            condition: Condition::Started,
            cause: Box::new(api.clone()),
        };
        assert_eq!(
            api.to_string(),
            "api: not started: db did not become ready: not ready after 1s: 127.0.0.1:1: \
             connection refused"
        );
        assert_eq!(
            web.to_string(),
            "web: not started: api did not start: not started: db did not become ready: not \
             ready after 1s: 127.0.0.1:1: connection refused"
        );
        let job = Error::NotCompleted {
            app: "migrate".into(),
            why: "exited with exit code 3".into(),
        };
        let app = Error::NotStarted {
            app: "app".into(),
            dep: "migrate".into(),
            condition: Condition::Completed,
            cause: Box::new(job),
        };
        assert_eq!(
            app.to_string(),
            "app: not started: migrate did not complete: exited with exit code 3"
        );
    }

    #[test]
    fn delete_refusals_read_well() {
        let one = Error::DependedOn {
            app: "db".into(),
            by: vec!["web".into()],
        };
        assert_eq!(
            one.to_string(),
            "db: cannot delete: web depends on it; delete web first, or in the same request"
        );
        let two = Error::DependedOn {
            app: "db".into(),
            by: vec!["api".into(), "web".into()],
        };
        assert_eq!(
            two.to_string(),
            "db: cannot delete: api, web depend on it; delete api, web first, or in the same \
             request"
        );
    }
}

//! The dependency graph between apps (`depends_on`), as pure functions over names: what a
//! request may not create (unknown names, cycles, with the cycle's path), what a start needs
//! first, what a stop takes with it, and in which order. No apps, no tasks: `order` acts on
//! what this module decides.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use crate::model::Dependency;

/// Apps by name, each with what it depends on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    deps: BTreeMap<String, Vec<Dependency>>,
}

/// Why a set of apps cannot be created (or ordered) as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// (app, the name it depends on that no app has), in name order.
    Unknown(Vec<(String, String)>),
    /// The apps of a cycle, first one repeated at the end: `a -> b -> a`.
    Cycle(Vec<String>),
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::Unknown(pairs) => {
                let each: Vec<String> = pairs
                    .iter()
                    .map(|(app, dep)| format!("{app} depends on {dep}, which does not exist"))
                    .collect();
                write!(f, "depends_on: {}", each.join("; "))
            }
            GraphError::Cycle(path) => write!(f, "depends_on: cycle: {}", path.join(" -> ")),
        }
    }
}

impl std::error::Error for GraphError {}

impl Graph {
    pub fn new(apps: impl IntoIterator<Item = (String, Vec<Dependency>)>) -> Graph {
        Graph {
            deps: apps.into_iter().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.deps.contains_key(name)
    }

    /// What `name` depends on directly (nothing for an unknown name).
    pub fn deps_of(&self, name: &str) -> &[Dependency] {
        self.deps.get(name).map_or(&[], Vec::as_slice)
    }

    /// Refuses names that no app has and cycles, looking only at the dependencies of `apps`
    /// (the apps a request creates) and at what is reachable from them: a graph that was fine
    /// stays fine, and its problems (if a state file had any) are not blamed on a new app.
    pub fn check(&self, apps: &[&str]) -> Result<(), GraphError> {
        let mut unknown = Vec::new();
        for app in apps {
            for d in self.deps_of(app) {
                if !self.contains(&d.app) {
                    unknown.push((app.to_string(), d.app.clone()));
                }
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            return Err(GraphError::Unknown(unknown));
        }
        match self.cycle_from(apps.iter().copied()) {
            Some(path) => Err(GraphError::Cycle(path)),
            None => Ok(()),
        }
    }

    /// A cycle reachable from `starts`, as a path whose last name is its first; depth-first,
    /// iterative (a long chain cannot overflow the stack), names in order, so the answer is
    /// always the same one.
    pub fn cycle_from<'a>(
        &'a self,
        starts: impl IntoIterator<Item = &'a str>,
    ) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            OnPath,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
        let mut starts: Vec<&str> = starts.into_iter().collect();
        starts.sort_unstable();
        for start in starts {
            if marks.contains_key(start) || !self.contains(start) {
                continue;
            }
            // The path: each name with the index of its next dependency to visit.
            let mut path: Vec<(&str, usize)> = vec![(start, 0)];
            marks.insert(start, Mark::OnPath);
            while let Some(top) = path.last_mut() {
                let (node, next) = *top;
                top.1 += 1;
                let Some(d) = self.deps_of(node).get(next) else {
                    marks.insert(node, Mark::Done);
                    path.pop();
                    continue;
                };
                let dep = d.app.as_str();
                if !self.contains(dep) {
                    continue;
                }
                match marks.get(dep) {
                    Some(Mark::Done) => {}
                    Some(Mark::OnPath) => {
                        let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            path[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(dep.to_string());
                        return Some(cycle);
                    }
                    None => {
                        marks.insert(dep, Mark::OnPath);
                        path.push((dep, 0));
                    }
                }
            }
        }
        None
    }

    /// The depth of `starts` and of everything they depend on: 0 for an app that depends on
    /// nothing (that exists), else one more than its deepest dependency. An app starts after
    /// every app of a smaller depth it depends on, and stops before them; ordering by depth
    /// keeps that true for any subset, also when the link between two of its apps runs through
    /// an app outside it. A cycle among them is an error (one elsewhere is not looked at).
    pub fn depths<'a>(
        &'a self,
        starts: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<BTreeMap<&'a str, usize>, GraphError> {
        if let Some(cycle) = self.cycle_from(starts.clone()) {
            return Err(GraphError::Cycle(cycle));
        }
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for root in starts {
            let Some((root, _)) = self.deps.get_key_value(root) else {
                continue;
            };
            // Iterative post-order: a node is done once all its dependencies are.
            let mut stack: Vec<&str> = vec![root.as_str()];
            while let Some(&node) = stack.last() {
                if depth.contains_key(node) {
                    stack.pop();
                    continue;
                }
                let pending: Vec<&str> = self
                    .deps_of(node)
                    .iter()
                    .map(|d| d.app.as_str())
                    .filter(|d| self.contains(d) && !depth.contains_key(d))
                    .collect();
                if pending.is_empty() {
                    let d = self
                        .deps_of(node)
                        .iter()
                        .filter_map(|d| depth.get(d.app.as_str()))
                        .map(|d| d + 1)
                        .max()
                        .unwrap_or(0);
                    depth.insert(node, d);
                    stack.pop();
                } else {
                    stack.extend(pending);
                }
            }
        }
        Ok(depth)
    }

    /// The apps of `set` in groups by depth, shallowest first (the order to start them in; each
    /// group may act in parallel). Reverse it to stop them.
    pub fn levels(&self, set: &BTreeSet<String>) -> Result<Vec<Vec<String>>, GraphError> {
        let depths = self.depths(set.iter().map(String::as_str))?;
        let mut levels: Vec<Vec<String>> = Vec::new();
        for name in set {
            let d = depths.get(name.as_str()).copied().unwrap_or(0);
            if levels.len() <= d {
                levels.resize_with(d + 1, Vec::new);
            }
            levels[d].push(name.clone());
        }
        levels.retain(|l| !l.is_empty());
        Ok(levels)
    }

    /// `roots` and what they need first, transitively: the dependencies of an app are needed
    /// only when `expand` says the app will be started (an app that already runs had its
    /// dependencies met when it started). Unknown names are left out (`deps_of` is empty).
    pub fn needed(&self, roots: &[String], expand: impl Fn(&str) -> bool) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.to_string()) || !expand(name) {
                continue;
            }
            for d in self.deps_of(name) {
                if self.contains(&d.app) && !seen.contains(&d.app) {
                    todo.push(&d.app);
                }
            }
        }
        seen
    }

    /// The apps that depend on any of `roots`, directly or through others (`roots` left out).
    pub fn dependents(&self, roots: &BTreeSet<String>) -> BTreeSet<String> {
        // Reverse edges, once.
        let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (app, deps) in &self.deps {
            for d in deps {
                by.entry(d.app.as_str()).or_default().push(app.as_str());
            }
        }
        let mut found: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
        while let Some(name) = todo.pop() {
            for &dependent in by.get(name).map_or(&[][..], Vec::as_slice) {
                if !roots.contains(dependent) && found.insert(dependent.to_string()) {
                    todo.push(dependent);
                }
            }
        }
        found
    }

    /// Whether `app` depends on any app of `set`, directly or through others.
    pub fn depends_on_any(&self, app: &str, set: &BTreeSet<String>) -> bool {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = vec![app];
        while let Some(name) = todo.pop() {
            for d in self.deps_of(name) {
                if set.contains(&d.app) {
                    return true;
                }
                if seen.insert(d.app.as_str()) {
                    todo.push(&d.app);
                }
            }
        }
        false
    }

    /// For each app of `doomed` that an app outside `doomed` depends on directly: those apps
    /// (deleting it would leave them depending on nothing), in name order.
    pub fn still_needed(&self, doomed: &BTreeSet<String>) -> Vec<(String, Vec<String>)> {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (app, deps) in &self.deps {
            if doomed.contains(app) {
                continue;
            }
            for d in deps {
                if doomed.contains(&d.app) {
                    by.entry(d.app.clone()).or_default().push(app.clone());
                }
            }
        }
        by.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Condition;

    fn dep(app: &str, condition: Condition) -> Dependency {
        Dependency {
            app: app.into(),
            condition,
        }
    }

    /// `spec`: "web:db,cache api:db db cache" (an app, then what it depends on, ready).
    fn graph(spec: &str) -> Graph {
        Graph::new(spec.split_whitespace().map(|entry| {
            let (app, deps) = entry.split_once(':').unwrap_or((entry, ""));
            let deps = deps
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| dep(d, Condition::Ready))
                .collect();
            (app.to_string(), deps)
        }))
    }

    fn set(names: &str) -> BTreeSet<String> {
        names.split_whitespace().map(String::from).collect()
    }

    fn levels(g: &Graph, names: &str) -> Vec<String> {
        g.levels(&set(names))
            .unwrap()
            .into_iter()
            .map(|l| l.join(","))
            .collect()
    }

    #[test]
    fn check_accepts_what_is_known_and_acyclic() {
        let g = graph("web:db,cache api:db db cache");
        assert_eq!(g.check(&["web", "api"]), Ok(()));
        assert_eq!(g.check(&[]), Ok(()));
        assert_eq!(graph("a").check(&["a"]), Ok(()));
    }

    #[test]
    fn check_names_every_unknown_dependency() {
        let g = graph("web:db,cachex api:dbx db");
        assert_eq!(
            g.check(&["web", "api"]),
            Err(GraphError::Unknown(vec![
                ("api".into(), "dbx".into()),
                ("web".into(), "cachex".into()),
            ]))
        );
        assert_eq!(
            g.check(&["web"]).unwrap_err().to_string(),
            "depends_on: web depends on cachex, which does not exist"
        );
        // Only the new apps' dependencies are looked at.
        assert_eq!(g.check(&["db"]), Ok(()));
    }

    #[test]
    fn check_names_the_cycle_path() {
        let cycle = |spec: &str, new: &[&str]| match graph(spec).check(new) {
            Err(GraphError::Cycle(p)) => p.join(" -> "),
            other => panic!("{other:?}"),
        };
        assert_eq!(cycle("a:b b:a", &["a"]), "a -> b -> a");
        assert_eq!(cycle("a:b b:a", &["b"]), "b -> a -> b");
        assert_eq!(cycle("a:b b:c c:a", &["a"]), "a -> b -> c -> a");
        // The cycle, not the way into it.
        assert_eq!(cycle("web:a a:b b:c c:a", &["web"]), "a -> b -> c -> a");
        assert_eq!(cycle("x y:z z:y", &["x", "y"]), "y -> z -> y");
        assert_eq!(
            graph("a:b b:a").check(&["a"]).unwrap_err().to_string(),
            "depends_on: cycle: a -> b -> a"
        );
    }

    #[test]
    fn a_diamond_is_no_cycle() {
        let g = graph("top:l,r l:base r:base base");
        assert_eq!(g.check(&["top", "l", "r", "base"]), Ok(()));
        assert_eq!(levels(&g, "top l r base"), ["base", "l,r", "top"]);
    }

    #[test]
    fn cycles_not_reachable_from_the_new_apps_are_not_theirs() {
        let g = graph("a:b b:a new");
        assert_eq!(g.check(&["new"]), Ok(()));
        assert!(g.depths(["a"]).is_err());
        // Nor do they keep the others from being ordered.
        assert_eq!(g.levels(&set("new")), Ok(vec![vec!["new".to_string()]]));
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let n = 100_000;
        let g = Graph::new((0..n).map(|i| {
            let deps = if i + 1 < n {
                vec![dep(&format!("a{}", i + 1), Condition::Ready)]
            } else {
                vec![]
            };
            (format!("a{i}"), deps)
        }));
        assert_eq!(g.check(&["a0"]), Ok(()));
        assert_eq!(g.depths(["a0"]).unwrap()["a0"], n - 1);
    }

    #[test]
    fn levels_follow_the_whole_graph() {
        let g = graph("web:api api:db db cache solo");
        assert_eq!(
            levels(&g, "web api db cache solo"),
            ["cache,db,solo", "api", "web"]
        );
        // web and db, with the link through api (not in the set): still ordered.
        assert_eq!(levels(&g, "web db"), ["db", "web"]);
        assert!(levels(&g, "").is_empty());
    }

    #[test]
    fn needed_follows_only_apps_that_will_start() {
        let g = graph("web:api,cache api:db db cache:db");
        let all = |_: &str| true;
        assert_eq!(g.needed(&["web".into()], all), set("web api cache db"));
        // api runs already: its dependencies are not looked at, but cache's are.
        assert_eq!(
            g.needed(&["web".into()], |n| n != "api"),
            set("web api cache db")
        );
        assert_eq!(
            g.needed(&["web".into()], |n| n != "api" && n != "cache"),
            set("web api cache")
        );
        assert_eq!(g.needed(&["web".into()], |_| false), set("web"));
        assert_eq!(g.needed(&["db".into()], all), set("db"));
    }

    #[test]
    fn dependents_are_transitive() {
        let g = graph("web:api api:db worker:db db other");
        assert_eq!(g.dependents(&set("db")), set("web api worker"));
        assert_eq!(g.dependents(&set("api")), set("web"));
        assert_eq!(g.dependents(&set("web")), set(""));
        assert_eq!(g.dependents(&set("db api")), set("web worker"));
    }

    #[test]
    fn depends_on_any_is_transitive() {
        let g = graph("web:api api:db db other");
        assert!(g.depends_on_any("web", &set("db")));
        assert!(g.depends_on_any("api", &set("db other")));
        assert!(!g.depends_on_any("db", &set("web api")));
        assert!(!g.depends_on_any("other", &set("db")));
    }

    #[test]
    fn still_needed_names_the_dependents_outside_the_set() {
        let g = graph("web:db,cache api:db db cache");
        assert_eq!(
            g.still_needed(&set("db")),
            vec![("db".to_string(), vec!["api".to_string(), "web".to_string()])]
        );
        assert_eq!(
            g.still_needed(&set("db cache web")),
            vec![("db".to_string(), vec!["api".to_string()])]
        );
        assert!(g.still_needed(&set("db cache web api")).is_empty());
        assert!(g.still_needed(&set("web")).is_empty());
    }
}

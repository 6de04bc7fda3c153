//! What applying an app file does (`grpm apply`, `grpm diff`): per app, created, changed (with
//! the settings that change), started, left alone or deleted. The agent computes the plan (the
//! `Apply` RPC, also as a dry run), so the API and the CLI always agree on it.

use serde::Serialize;
use serde_json::Value;

use super::{AppId, AppSpec, Env};

/// What applying does to one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    /// New: created and started.
    Create,
    /// Its spec changed (or, with `--update-env`, its captured environment): restarted with
    /// the new one, keeping its id, restart count, logs and events.
    Change,
    /// Unchanged, but not running (stopped or errored): started, as `grpm start FILE` does.
    Start,
    /// Unchanged and running (or a one-shot job that completed): left alone.
    Unchanged,
    /// Created from this file, which no longer lists it: deleted (with `--prune`).
    Delete,
}

impl PlanAction {
    /// The word in plans and JSON: create, change, start, unchanged, delete.
    pub fn word(self) -> &'static str {
        match self {
            PlanAction::Create => "create",
            PlanAction::Change => "change",
            PlanAction::Start => "start",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Delete => "delete",
        }
    }
}

/// One setting that changes: dotted path (`restart.delay`, `env.TOKEN`), and its value before
/// and after as text (`None`: not set). Values of environment variables are never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What stands for an environment variable's value in a plan.
pub const MASKED: &str = "***";

/// One app of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    pub name: String,
    /// The existing app's id; `None` for one to create.
    pub id: Option<AppId>,
    pub action: PlanAction,
    /// For `change`: what changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
}

/// What applying a file does, app by app: the file's apps in its order, then the deletions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub entries: Vec<PlanEntry>,
}

impl Plan {
    /// Whether applying changes anything (anything but `unchanged`).
    pub fn has_work(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.action != PlanAction::Unchanged)
    }
}

/// The settings that differ between a stored spec and a new one, in a stable order. The file
/// an app belongs to is not a setting; the values of `env` and profile variables are masked.
pub fn diff_specs(old: &AppSpec, new: &AppSpec) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let plain = |s: &AppSpec| {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            for k in ["env", "profile", "file"] {
                o.remove(k);
            }
            // Left out of state.json when 1; a plan shows it from and to.
            o.insert("instances".into(), Value::from(s.instances));
        }
        let mut flat = std::collections::BTreeMap::new();
        flatten("", &v, &mut flat);
        flat
    };
    let (a, b) = (plain(old), plain(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            out.push(FieldChange {
                field: k.clone(),
                from: x.map(ToString::to_string),
                to: y.map(ToString::to_string),
            });
        }
    }
    out.extend(diff_env("env", &old.env, &new.env));
    let name = |s: &AppSpec| s.profile.as_ref().map(|p| p.name.clone());
    if name(old) != name(new) {
        out.push(FieldChange {
            field: "env_profile".into(),
            from: name(old),
            to: name(new),
        });
    }
    let empty = Env::new();
    let penv =
        |s: &'_ AppSpec| -> Env { s.profile.as_ref().map_or(empty.clone(), |p| p.env.clone()) };
    out.extend(diff_env("profile_env", &penv(old), &penv(new)));
    out
}

/// The variables that differ between two environments, `prefix.NAME`, values masked.
pub fn diff_env(prefix: &str, old: &Env, new: &Env) -> Vec<FieldChange> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldChange {
            field: format!("{prefix}.{k}"),
            from: old.get(k).map(|_| MASKED.to_string()),
            to: new.get(k).map(|_| MASKED.to_string()),
        })
        .collect()
}

/// Objects become dotted paths; anything else is a leaf.
fn flatten(prefix: &str, v: &Value, out: &mut std::collections::BTreeMap<String, Value>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppDraft, EnvProfile};
    use std::time::Duration;

    fn spec(d: AppDraft) -> AppSpec {
        d.fill(std::path::Path::new("/srv"))
    }

    fn base() -> AppDraft {
        AppDraft {
            name: "web".into(),
            cmd: vec!["sleep".into(), "1".into()],
            env: [("TOKEN".into(), "hunter2".into())].into(),
            ..AppDraft::default()
        }
    }

    #[test]
    fn equal_specs_have_no_changes_whatever_file_they_came_from() {
        let a = spec(base());
        let mut b = spec(base());
        b.file = Some("/elsewhere/apps.toml".into());
        assert!(diff_specs(&a, &b).is_empty());
    }

    #[test]
    fn changes_name_their_setting_and_mask_env_values() {
        let a = spec(base());
        let mut b = spec(AppDraft {
            cmd: vec!["sleep".into(), "2".into()],
            restart_delay: Some(Duration::from_millis(200)),
            env: [
                ("TOKEN".into(), "s3cret".into()),
                ("NEW".into(), "1".into()),
            ]
            .into(),
            ..base()
        });
        b.profile = Some(EnvProfile {
            name: "production".into(),
            env: [("LEVEL".into(), "warn".into())].into(),
        });
        let c = diff_specs(&a, &b);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cmd",
                "restart.delay",
                "env.NEW",
                "env.TOKEN",
                "env_profile",
                "profile_env.LEVEL"
            ]
        );
        assert_eq!(c[0].from.as_deref(), Some(r#"["sleep","1"]"#));
        assert_eq!(c[1].to.as_deref(), Some("200"));
        assert_eq!(
            (c[2].from.as_deref(), c[2].to.as_deref()),
            (None, Some(MASKED))
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret") && !shown.contains("warn"));
    }

    #[test]
    fn instances_sockets_and_reload_grace_are_settings() {
        let a = spec(base());
        let b = spec(AppDraft {
            instances: Some(3),
            sockets: vec![crate::model::SocketSpec {
                name: "http".into(),
                listen: crate::model::Listen::parse("127.0.0.1:8080").unwrap(),
                backlog: 64,
            }],
            reload_grace: Some(Duration::from_millis(2500)),
            ..base()
        });
        let c = diff_specs(&a, &b);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["instances", "reload_grace", "sockets"]);
        assert_eq!(
            (c[0].from.as_deref(), c[0].to.as_deref()),
            (Some("1"), Some("3"))
        );
        assert_eq!(c[1].to.as_deref(), Some("2500"));
        assert!(c[2].to.as_deref().unwrap().contains("127.0.0.1:8080"));
    }
}

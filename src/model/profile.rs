//! Env profiles and where each variable of an app's environment comes from.
//!
//! An app file may declare named sets of variables (`[env_profiles.production]` for every app,
//! `[app.env_profiles.production]` for one); `--env-profile production` picks one, and the
//! chosen profile's variables travel with the spec ([`EnvProfile`]), apart from the declared
//! `env`, so that `describe` can say which variable came from where ([`EnvOrigin`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{validate_env, AppId, AppSpec, Env};

/// The profile an app was created or applied with: its name and its variables (the file's
/// top-level profile of that name, overridden by the app's own).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvProfile {
    pub name: String,
    #[serde(default)]
    pub env: Env,
}

/// Hand-written so that values (often secrets) never reach a log.
impl std::fmt::Debug for EnvProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvProfile")
            .field("name", &self.name)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EnvProfile {
    /// A profile name: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`; its variables as any environment.
    pub fn check(&self) -> Result<(), String> {
        check_profile_name(&self.name)?;
        validate_env(&self.env).map_err(|e| format!("env profile {}: {e}", self.name))
    }
}

/// Checks a profile name (the word after `--env-profile` and in `[env_profiles.NAME]`).
pub fn check_profile_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "env profile name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting \
             with a letter or digit"
        ))
    }
}

/// Where a variable of an app's environment comes from. Later sources win: the captured
/// environment, then declared variables, then the profile, then grpm's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EnvOrigin {
    /// Captured when the app was created (or at the last `--update-env`): the creating CLI's
    /// environment on a local agent, the agent's own otherwise.
    Captured,
    /// Declared in the app file's `env` (or with `--env`).
    Declared,
    /// From the named env profile.
    Profile(String),
    /// Set by grpm: `GRPM_APP_ID`, `GRPM_AGENT_ID`, `GRPM_APP_NAME`, `GRPM_INSTANCE`, and
    /// `GRPM_SLOT` for a reload's replacement.
    Grpm,
}

impl EnvOrigin {
    /// The word in `describe --json` (`origin`): captured, declared, profile, grpm.
    pub fn word(&self) -> &'static str {
        match self {
            EnvOrigin::Captured => "captured",
            EnvOrigin::Declared => "declared",
            EnvOrigin::Profile(_) => "profile",
            EnvOrigin::Grpm => "grpm",
        }
    }

    /// For people: "captured", "declared", "profile production", "grpm".
    pub fn text(&self) -> String {
        match self {
            EnvOrigin::Profile(p) => format!("profile {p}"),
            other => other.word().to_string(),
        }
    }
}

/// The variables grpm sets on every instance of every app (and that mark its process tree).
/// `GRPM_SLOT` is set too, but only on a reload's replacement (slot not 0).
pub const GRPM_VARS: [&str; 4] = [
    "GRPM_AGENT_ID",
    "GRPM_APP_ID",
    "GRPM_APP_NAME",
    "GRPM_INSTANCE",
];

/// The environment an instance's processes get: the captured base, then declared variables,
/// then the profile's, then grpm's identity variables (which mark every descendant as part of
/// the instance's tree): `GRPM_INSTANCE` for the instance's number, and `GRPM_SLOT` (only when
/// not 0) to tell a reload's replacement from the instance it replaces.
pub fn effective_env(
    base: &Env,
    spec: &AppSpec,
    agent_id: &str,
    id: AppId,
    instance: u32,
    slot: u32,
) -> Env {
    let mut env = base.clone();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(p) = &spec.profile {
        env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    env.insert("GRPM_AGENT_ID".into(), agent_id.into());
    env.insert("GRPM_APP_ID".into(), id.to_string());
    env.insert("GRPM_APP_NAME".into(), spec.name.clone());
    env.insert("GRPM_INSTANCE".into(), instance.to_string());
    if slot != 0 {
        env.insert("GRPM_SLOT".into(), slot.to_string());
    } else {
        env.remove("GRPM_SLOT");
    }
    env
}

/// Where each variable of [`effective_env`] (for an instance in `slot`) comes from (the source
/// that wins).
pub fn env_origins(base: &Env, spec: &AppSpec, slot: u32) -> BTreeMap<String, EnvOrigin> {
    let mut out: BTreeMap<String, EnvOrigin> = base
        .keys()
        .map(|k| (k.clone(), EnvOrigin::Captured))
        .collect();
    for k in spec.env.keys() {
        out.insert(k.clone(), EnvOrigin::Declared);
    }
    if let Some(p) = &spec.profile {
        for k in p.env.keys() {
            out.insert(k.clone(), EnvOrigin::Profile(p.name.clone()));
        }
    }
    for k in GRPM_VARS {
        out.insert(k.to_string(), EnvOrigin::Grpm);
    }
    if slot != 0 {
        out.insert("GRPM_SLOT".into(), EnvOrigin::Grpm);
    } else {
        out.remove("GRPM_SLOT");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppDraft;

    #[test]
    fn later_sources_win_and_each_variable_says_where_it_came_from() {
        let mut spec = AppDraft {
            name: "web".into(),
            cmd: vec!["x".into()],
            env: [
                ("PORT".into(), "80".into()),
                ("LEVEL".into(), "debug".into()),
            ]
            .into(),
            ..AppDraft::default()
        }
        .fill(std::path::Path::new("/"));
        spec.profile = Some(EnvProfile {
            name: "production".into(),
            env: [("LEVEL".into(), "warn".into())].into(),
        });
        let base: Env = [("HOME".into(), "/h".into()), ("PORT".into(), "1".into())].into();
        let env = effective_env(&base, &spec, "agent", 7, 0, 0);
        assert_eq!(
            (env["PORT"].as_str(), env["LEVEL"].as_str()),
            ("80", "warn")
        );
        let o = env_origins(&base, &spec, 0);
        assert_eq!(o["HOME"], EnvOrigin::Captured);
        assert_eq!(o["PORT"], EnvOrigin::Declared);
        assert_eq!(o["LEVEL"], EnvOrigin::Profile("production".into()));
        assert_eq!(o["GRPM_APP_ID"], EnvOrigin::Grpm);
        assert_eq!(o["GRPM_INSTANCE"], EnvOrigin::Grpm);
        assert_eq!(o.len(), env.len());
        // A reload's replacement: GRPM_SLOT is grpm's too.
        let env = effective_env(&base, &spec, "agent", 7, 1, 3);
        let o = env_origins(&base, &spec, 3);
        assert_eq!(env["GRPM_SLOT"], "3");
        assert_eq!(o["GRPM_SLOT"], EnvOrigin::Grpm);
        assert_eq!(o.len(), env.len());
    }

    #[test]
    fn profile_names_are_words() {
        assert!(check_profile_name("production").is_ok());
        assert!(check_profile_name("stage-2.eu").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_profile_name(bad).is_err(), "{bad:?}");
        }
    }
}

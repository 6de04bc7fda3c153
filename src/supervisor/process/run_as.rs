//! Running an app as another user, with its own umask and resource limits: what is looked up
//! before the fork (the user's ids and groups, the limits' resources), the checks the edge runs
//! against this system (the user exists, the agent is root, a limit fits under the agent's own
//! hard limit), and what the child does between fork and exec: setrlimit, umask, setgroups,
//! setgid, setuid — system calls only, nothing that allocates.

use std::{ffi::CString, io};

use nix::{
    sys::{
        resource::{getrlimit, setrlimit, Resource},
        stat::{umask, Mode},
    },
    unistd::{geteuid, getgrouplist, setgid, setgroups, setuid, Gid, Group, Uid, User},
};

use crate::model::{AppSpec, UNLIMITED};

/// The resource behind a limit's name.
fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "cpu" => Resource::RLIMIT_CPU,
        _ => return None,
    })
}

fn rlim(v: u64) -> nix::libc::rlim_t {
    if v == UNLIMITED {
        nix::libc::RLIM_INFINITY
    } else {
        v as nix::libc::rlim_t
    }
}

/// Checks `spec`'s user, group and limits against this system; the message says what is wrong.
pub fn check(spec: &AppSpec) -> Result<(), String> {
    if spec.user.is_some() || spec.group.is_some() {
        let me = geteuid();
        if !me.is_root() {
            return Err(format!(
                "the agent runs as uid {me}, not root: it cannot run an app as another user or group"
            ));
        }
    }
    if let Some(u) = &spec.user {
        match User::from_name(u) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("user {u:?} does not exist")),
            Err(e) => return Err(format!("user {u:?}: {e}")),
        }
    }
    if let Some(g) = &spec.group {
        match Group::from_name(g) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("group {g:?} does not exist")),
            Err(e) => return Err(format!("group {g:?}: {e}")),
        }
    }
    for (name, &value) in &spec.limits {
        let r = resource(name).ok_or_else(|| format!("unknown limit {name:?}"))?;
        let (_, hard) = getrlimit(r).map_err(|e| format!("limits: {name}: {e}"))?;
        if hard != nix::libc::RLIM_INFINITY && rlim(value) > hard {
            let shown = if value == UNLIMITED {
                "unlimited".to_string()
            } else {
                value.to_string()
            };
            return Err(format!(
                "limits: {name} {shown} is above the agent's hard limit {hard}"
            ));
        }
    }
    Ok(())
}

/// What the child applies before exec, looked up in the parent.
pub struct Prepared {
    ids: Option<(Uid, Gid, Vec<Gid>)>,
    umask: Option<Mode>,
    limits: Vec<(Resource, nix::libc::rlim_t)>,
    /// HOME, USER and LOGNAME of the user.
    pub env: Vec<(String, String)>,
}

/// Looks up what `spec` asks for; `None` when it asks for nothing (the plain spawn path).
pub fn prepare(spec: &AppSpec) -> io::Result<Option<Prepared>> {
    if spec.user.is_none() && spec.group.is_none() && spec.umask.is_none() && spec.limits.is_empty()
    {
        return Ok(None);
    }
    let mut env = Vec::new();
    let ids = match (&spec.user, &spec.group) {
        (None, None) => None,
        (user, group) => {
            let u = match user {
                Some(name) => Some(
                    User::from_name(name)?
                        .ok_or_else(|| io::Error::other(format!("user {name:?} does not exist")))?,
                ),
                None => None,
            };
            let gid = match group {
                Some(name) => {
                    Group::from_name(name)?
                        .ok_or_else(|| io::Error::other(format!("group {name:?} does not exist")))?
                        .gid
                }
                None => u.as_ref().map_or_else(nix::unistd::getgid, |u| u.gid),
            };
            let (uid, groups) = match &u {
                Some(u) => {
                    let c = CString::new(u.name.as_str()).map_err(io::Error::other)?;
                    env.push(("HOME".into(), u.dir.to_string_lossy().into_owned()));
                    env.push(("USER".into(), u.name.clone()));
                    env.push(("LOGNAME".into(), u.name.clone()));
                    (u.uid, getgrouplist(&c, gid)?)
                }
                None => (nix::unistd::getuid(), vec![gid]),
            };
            Some((uid, gid, groups))
        }
    };
    let limits = spec
        .limits
        .iter()
        .filter_map(|(n, &v)| resource(n).map(|r| (r, rlim(v))))
        .collect();
    Ok(Some(Prepared {
        ids,
        umask: spec
            .umask
            .map(|m| Mode::from_bits_truncate(m as nix::libc::mode_t)),
        limits,
        env,
    }))
}

impl Prepared {
    /// Runs in the child between fork and exec: limits first (while still privileged), then
    /// the umask, then groups, group and user.
    pub fn apply(&self) -> io::Result<()> {
        for &(r, v) in &self.limits {
            setrlimit(r, v, v)?;
        }
        if let Some(m) = self.umask {
            umask(m);
        }
        if let Some((uid, gid, groups)) = &self.ids {
            setgroups(groups)?;
            setgid(*gid)?;
            setuid(*uid)?;
        }
        Ok(())
    }
}

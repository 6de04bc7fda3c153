//! Boot and shell integration, generated rather than written by hand: `grpm startup systemd`
//! (a unit for the agent), `grpm completions SHELL` (clap_complete) and `grpm man` (clap_mangen),
//! the last two from the same clap definitions as the parser itself.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::CommandFactory;

use super::{
    args::Cli,
    failure::{out, Failure},
};
use crate::home::Home;

/// Where and for whom a unit runs the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The `grpm` binary.
    pub exe: PathBuf,
    pub home: PathBuf,
    /// `None` for a user unit (it runs as the user whose manager runs it).
    pub user: Option<String>,
}

impl Unit {
    /// The unit's file name: `grpm.service` for a user unit, `grpm-USER.service` otherwise.
    pub fn file_name(&self) -> String {
        match &self.user {
            None => "grpm.service".into(),
            Some(u) => format!("grpm-{u}.service"),
        }
    }

    /// The unit file.
    pub fn text(&self) -> String {
        let mut s = String::new();
        s.push_str("# The grpm agent, written by `grpm startup systemd`.\n");
        s.push_str("[Unit]\n");
        s.push_str(&format!(
            "Description=grpm process manager agent ({})\n",
            self.home.display()
        ));
        s.push_str("After=network.target\n\n");
        s.push_str("[Service]\n");
        // The agent says READY=1 once its socket is up, STOPPING=1 when it begins to stop. It
        // runs as the child of its keeper (the unit's main process, whose pid it reports as
        // MAINPID), hence NotifyAccess=all.
        s.push_str("Type=notify\nNotifyAccess=all\n");
        if let Some(u) = &self.user {
            s.push_str(&format!("User={u}\n"));
        }
        s.push_str(&format!(
            "Environment={}\n",
            quote(&format!("GRPM_HOME={}", self.home.display()))
        ));
        s.push_str(&format!(
            "ExecStart={} agent\n",
            quote(&self.exe.display().to_string())
        ));
        // `systemctl stop` sends SIGTERM to the keeper alone, which passes it to the agent, which ends every app's tree itself
        // and keeps the desired states (as `grpm kill` does). When the agent crashes, systemd
        // kills nothing else either: the apps run on, and the restarted agent adopts them.
        // (control-group or mixed would kill every app on a crash too.)
        s.push_str("KillMode=process\n");
        s.push_str("KillSignal=SIGTERM\n");
        // Room for apps' kill timeouts (5 s by default) before systemd gives up.
        s.push_str("TimeoutStopSec=90\n");
        s.push_str("Restart=on-failure\nRestartSec=1\n\n");
        s.push_str("[Install]\n");
        s.push_str(match self.user {
            None => "WantedBy=default.target\n",
            Some(_) => "WantedBy=multi-user.target\n",
        });
        s
    }
}

/// A value for a unit file: quoted when it holds spaces or quotes, `%` and `$` escaped (systemd
/// expands both).
fn quote(v: &str) -> String {
    let escaped = v
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    if escaped.contains([' ', '\t', '"', '\'', '\\']) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// `grpm startup systemd [--user] [--install]`.
pub fn startup_systemd(home: &Home, user_unit: bool, install: bool) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| Failure::Failed(format!("cannot tell where the grpm binary is: {e}")))?;
    let user = if user_unit {
        None
    } else {
        Some(current_user().map_err(Failure::Failed)?)
    };
    let unit = Unit {
        exe,
        home: home.root.clone(),
        user,
    };
    if !install {
        return out(format_args!("{}", unit.text().trim_end()));
    }
    let dir = if user_unit {
        user_unit_dir().map_err(Failure::Failed)?
    } else {
        PathBuf::from("/etc/systemd/system")
    };
    let path = dir.join(unit.file_name());
    write_unit(&dir, &path, &unit.text())
        .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", path.display())))?;
    let ctl = if user_unit {
        "systemctl --user"
    } else {
        "systemctl"
    };
    out(format_args!(
        "wrote {}\nnow run: {ctl} daemon-reload && {ctl} enable --now {}",
        path.display(),
        unit.file_name()
    ))
}

fn write_unit(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::home::write_atomic(path, text.as_bytes())
}

/// `$XDG_CONFIG_HOME/systemd/user`, or `~/.config/systemd/user`.
fn user_unit_dir() -> Result<PathBuf, String> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config"))
            .ok_or("neither XDG_CONFIG_HOME nor HOME is set")?,
    };
    Ok(config.join("systemd").join("user"))
}

/// The name of the user this runs as.
fn current_user() -> Result<String, String> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok(u.name),
        _ => Err(format!("uid {uid} has no user name for the unit's User=")),
    }
}

/// `grpm completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "grpm", &mut buf);
    write_stdout(&buf)
}

/// `grpm man [--out DIR]`: the page on stdout, or every page (grpm.1, grpm-start.1...) in DIR.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(cmd, dir))
                .map_err(|e| Failure::Failed(format!("cannot write to {}: {e}", dir.display())))?;
            out(format_args!("wrote the man pages to {}", dir.display()))
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| Failure::Failed(format!("cannot render the man page: {e}")))?;
            write_stdout(&buf)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`grpm man | head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Failed(format!("cannot write: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_notify_and_kills_only_the_agent() {
        let unit = Unit {
            exe: "/opt/my tools/grpm".into(),
            home: "/home/ann/.grpm".into(),
            user: Some("ann".into()),
        };
        let t = unit.text();
        assert!(t.contains("Type=notify\n"), "{t}");
        assert!(t.contains("KillMode=process\n"), "{t}");
        assert!(t.contains("User=ann\n"), "{t}");
        assert!(
            t.contains("ExecStart=\"/opt/my tools/grpm\" agent\n"),
            "{t}"
        );
        assert!(t.contains("Environment=GRPM_HOME=/home/ann/.grpm\n"), "{t}");
        assert!(t.contains("WantedBy=multi-user.target"), "{t}");
        assert_eq!(unit.file_name(), "grpm-ann.service");
        let user = Unit { user: None, ..unit };
        assert!(user.text().contains("WantedBy=default.target"));
        assert!(!user.text().contains("User="));
        assert_eq!(user.file_name(), "grpm.service");
    }

    #[test]
    fn values_are_quoted_and_escaped() {
        assert_eq!(quote("/usr/bin/grpm"), "/usr/bin/grpm");
        assert_eq!(quote("/a b"), "\"/a b\"");
        assert_eq!(quote("/a%b$c"), "/a%%b$$c");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}

//! Running an app as another user, with a umask and resource limits (CI runs as root): the app
//! sees its uid, gid and groups in /proc/self/status and its limits in /proc/self/limits;
//! a user that does not exist and a limit above the agent's hard limit are refused.

use std::time::Duration;

use crate::common::{wait_until, Agent};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn an_app_runs_as_nobody_with_its_umask_and_limits() {
    if !is_root() {
        eprintln!("skipped: switching users needs root (CI runs as root)");
        return;
    }
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "who",
        "--user",
        "nobody",
        "--umask",
        "027",
        "--limit",
        "nofile=1000",
        "--limit",
        "core=0",
        "--",
        "sh",
        "-c",
        "cat /proc/self/status /proc/self/limits; echo umask=$(umask) home=$HOME user=$USER; exec sleep 1000",
    ]);
    let mut out = String::new();
    wait_until(
        "the app's report in its log",
        Duration::from_secs(10),
        || {
            out = agent.ok(&["logs", "who", "--lines", "200", "--out"]);
            out.contains("umask=")
        },
    );
    let line = |key: &str| {
        out.lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
            .to_string()
    };
    assert!(line("Uid:").contains("65534"), "{}", line("Uid:"));
    assert!(line("Gid:").contains("65534"), "{}", line("Gid:"));
    assert!(
        line("Groups:").trim_end().ends_with("65534"),
        "{}",
        line("Groups:")
    );
    let nofile = line("Max open files");
    assert!(
        nofile.split_whitespace().filter(|w| *w == "1000").count() == 2,
        "{nofile}"
    );
    let core = line("Max core file size");
    assert!(
        core.split_whitespace().filter(|w| *w == "0").count() == 2,
        "{core}"
    );
    let env = line("umask=");
    assert!(
        env.contains("umask=0027")
            && env.contains("home=/nonexistent")
            && env.contains("user=nobody"),
        "{env}"
    );
    let d = agent.describe("who");
    assert_eq!(d["user"], "nobody", "{d}");
}

#[test]
fn a_missing_user_and_a_limit_too_high_are_refused() {
    let agent = Agent::start();
    if is_root() {
        let err = agent.fails(
            2,
            &[
                "start",
                "--name",
                "x",
                "--user",
                "no-such-user",
                "--",
                "true",
            ],
        );
        assert!(
            err.contains("user \"no-such-user\" does not exist"),
            "{err}"
        );
    }
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    if hard != nix::libc::RLIM_INFINITY {
        let too_high = format!("nofile={}", hard + 1);
        let err = agent.fails(
            2,
            &["start", "--name", "x", "--limit", &too_high, "--", "true"],
        );
        assert!(err.contains("above the agent's hard limit"), "{err}");
    }
    let err = agent.fails(
        2,
        &["start", "--name", "x", "--limit", "fds=1", "--", "true"],
    );
    assert!(err.contains("unknown limit"), "{err}");
    assert!(agent.list().is_empty());
}

//! Semantics 1: an app's environment is fixed at creation; restart, stop + start, autorestart
//! reuse it exactly; only `--update-env` brings the caller's environment in.

use std::{collections::BTreeMap, fs, time::Duration};

use crate::common::*;

/// Starts an app that writes its environment to `envs/<pid>` and then sleeps.
fn env_app(agent: &Agent) -> String {
    let dir = agent.path("envs");
    fs::create_dir_all(&dir).unwrap();
    agent.script(
        "envdump.sh",
        &format!("env > {dir}/$$.tmp && mv {dir}/$$.tmp {dir}/$$\nexec sleep 1000"),
    )
}

fn env_of(agent: &Agent, pid: u32) -> BTreeMap<String, String> {
    let path = format!("{}/{pid}", agent.path("envs"));
    wait_until(
        &format!("env dump of pid {pid}"),
        Duration::from_secs(20),
        || fs::metadata(&path).is_ok(),
    );
    fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn restart_is_stop_plus_start_and_never_leaks_the_callers_env() {
    let agent = Agent::start();
    let script = env_app(&agent);
    let created = agent
        .cmd()
        .env("CREATOR_VAR", "from-creator")
        .env("FOO", "creator-foo")
        .args([
            "start",
            "--name",
            "envapp",
            "--env",
            "FOO=declared",
            "--",
            &script,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let pid1 = agent.wait_online("envapp", None);
    let env1 = env_of(&agent, pid1);
    assert_eq!(
        env1["CREATOR_VAR"], "from-creator",
        "the creator's environment is the base"
    );
    assert_eq!(
        env1["FOO"], "declared",
        "declared entries win over the base"
    );
    assert_eq!(env1["GRPM_APP_ID"], "1");
    assert_eq!(env1["GRPM_APP_NAME"], "envapp");
    assert!(env1.contains_key("GRPM_AGENT_ID"));

    // restart from a shell with an extra variable: it must not reach the app.
    let out = agent
        .cmd()
        .env("LEAKED", "1")
        .env("CREATOR_VAR", "changed")
        .args(["restart", "envapp"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid2 = agent.wait_online("envapp", Some(pid1));
    let env2 = env_of(&agent, pid2);
    assert!(
        !env2.contains_key("LEAKED"),
        "restart leaked the caller's environment"
    );
    assert_eq!(env2, env1, "restart changed the environment");

    // stop + start: identical to restart.
    agent
        .cmd()
        .env("LEAKED", "1")
        .args(["stop", "envapp"])
        .output()
        .unwrap();
    assert_eq!(agent.status("envapp"), "stopped");
    let out = agent
        .cmd()
        .env("LEAKED", "1")
        .args(["start", "envapp"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid3 = agent.wait_online("envapp", Some(pid2));
    assert_eq!(
        env_of(&agent, pid3),
        env2,
        "stop + start differs from restart"
    );

    // autorestart after a crash: the same environment again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid3 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let pid4 = agent.wait_online("envapp", Some(pid3));
    assert_eq!(
        env_of(&agent, pid4),
        env1,
        "autorestart changed the environment"
    );

    // --update-env: the caller's environment replaces the base; declared entries still win.
    let out = agent
        .cmd()
        .env("LEAKED", "1")
        .env("FOO", "caller-foo")
        .args(["restart", "envapp", "--update-env"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid5 = agent.wait_online("envapp", Some(pid4));
    let env5 = env_of(&agent, pid5);
    assert_eq!(
        env5["LEAKED"], "1",
        "--update-env did not bring the caller's variable"
    );
    assert!(
        !env5.contains_key("CREATOR_VAR"),
        "the old base should be replaced"
    );
    assert_eq!(env5["FOO"], "declared");

    // And it sticks: a plain restart keeps the updated base.
    agent.ok(&["restart", "envapp"]);
    let pid6 = agent.wait_online("envapp", Some(pid5));
    assert_eq!(env_of(&agent, pid6), env5);
}

#[test]
fn the_environment_survives_an_agent_restart() {
    let mut agent = Agent::start();
    let script = env_app(&agent);
    let out = agent
        .cmd()
        .env("CREATOR_VAR", "kept")
        .args(["start", "--name", "envapp", "--", &script])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid1 = agent.wait_online("envapp", None);
    let env1 = env_of(&agent, pid1);
    agent.ok(&["kill"]);
    agent.reap();
    assert!(!alive(pid1), "grpm kill left the app running");
    // The next agent starts the app again, from its stored environment, not the agent's.
    agent.spawn();
    let pid2 = agent.wait_online("envapp", Some(pid1));
    let env2 = env_of(&agent, pid2);
    assert_eq!(env2, env1);
}

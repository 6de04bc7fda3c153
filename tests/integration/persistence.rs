//! Semantics 5: desired state survives the agent; after a crash no app ever runs twice.

use std::{fs, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::common::*;

fn parent_script(agent: &Agent) -> String {
    let kids = agent.path("kids");
    agent.script(
        "parent.sh",
        &format!("sleep 1000 &\necho $! >> {kids}\nwait"),
    )
}

/// Starts `web` (a main process with one child), then crashes the agent. Returns the main
/// pid, the child's pid and the agent id.
fn web_then_crash(agent: &mut Agent) -> (u32, u32, String) {
    let script = parent_script(agent);
    agent.ok(&["start", "--name", "web", "--", &script]);
    let main = agent.wait_online("web", None);
    let kid = read_pids(&agent.path("kids"), 1)[0];
    let agent_id = agent.agent_id();
    agent.crash();
    (main, kid, agent_id)
}

#[test]
fn a_new_agent_adopts_apps_that_survived_a_crash() {
    let mut agent = Agent::start();
    let (main, kid, agent_id) = web_then_crash(&mut agent);
    assert!(
        alive(main) && alive(kid),
        "a crashed agent must not take its apps down"
    );

    agent.spawn();
    assert_eq!(
        agent.wait_online("web", None),
        main,
        "the survivor was not adopted"
    );
    assert_eq!(app_processes(&agent_id, 1), {
        let mut v = vec![main, kid];
        v.sort();
        v
    });
    // An adopted app is supervised like any other: its exit is noticed and it restarts...
    kill(Pid::from_raw(main as i32), Signal::SIGKILL).unwrap();
    let main2 = agent.wait_online("web", Some(main));
    // ...and its leftovers are ended before the new generation starts.
    wait_until(
        "the adopted child to be ended",
        Duration::from_secs(10),
        || !alive(kid),
    );
    // And stop ends the whole adopted tree.
    agent.ok(&["stop", "web"]);
    assert!(!alive(main2));
    assert!(app_processes(&agent_id, 1).is_empty());
}

#[test]
fn leftovers_of_a_dead_app_are_ended_not_duplicated() {
    let mut agent = Agent::start();
    let (main, kid, agent_id) = web_then_crash(&mut agent);
    // While no agent runs, the main process dies; its child lives on as an orphan.
    kill(Pid::from_raw(main as i32), Signal::SIGKILL).unwrap();
    wait_until("the main process to die", Duration::from_secs(10), || {
        !alive(main)
    });
    assert!(alive(kid));

    agent.spawn();
    let main2 = agent.wait_online("web", Some(main));
    assert!(
        !alive(kid),
        "the orphan of the old generation survived the new agent's start"
    );
    let kid2 = read_pids(&agent.path("kids"), 2)[1];
    let mut expected = vec![main2, kid2];
    expected.sort();
    wait_until(
        "exactly the new generation",
        Duration::from_secs(10),
        || app_processes(&agent_id, 1) == expected,
    );
}

#[test]
fn desired_state_survives_an_agent_restart() {
    let mut agent = Agent::start();
    agent.ok(&["start", "--name", "up", "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "down", "--", "sleep", "1000"]);
    agent.ok(&["stop", "down"]);
    let up1 = agent.wait_online("up", None);

    let state: Value =
        serde_json::from_str(&fs::read_to_string(agent.home.join("state.json")).unwrap()).unwrap();
    let desired: Vec<(String, String)> = state["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["spec"]["name"].as_str().unwrap().into(),
                a["desired"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        desired,
        [
            ("up".into(), "online".into()),
            ("down".into(), "stopped".into())
        ]
    );
    assert!(!agent.home.join("state.json.tmp").exists());

    agent.ok(&["kill"]);
    agent.reap();
    assert!(!alive(up1), "kill must stop the apps");
    agent.spawn();
    agent.wait_online("up", Some(up1));
    assert_eq!(agent.status("down"), "stopped");
    // Ids keep counting after a restart of the agent and are never reused.
    agent.ok(&["delete", "down"]);
    agent.ok(&["start", "--name", "third", "--", "sleep", "1000"]);
    assert_eq!(agent.app("third")["id"], 3);
}

#[test]
fn a_corrupt_state_file_is_kept_aside_with_a_clear_message() {
    let mut agent = Agent::start();
    agent.ok(&["kill"]);
    agent.reap();
    fs::write(agent.home.join("state.json"), "{ not json").unwrap();
    agent.spawn();
    assert!(agent.list().is_empty());
    let aside: Vec<String> = fs::read_dir(&agent.home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        fs::read_to_string(agent.home.join(&aside[0])).unwrap(),
        "{ not json"
    );
    assert!(agent.log().contains("is corrupt"), "{}", agent.log());
}

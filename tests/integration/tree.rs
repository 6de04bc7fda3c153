//! Semantics 2: stop and restart end the whole tree (group, grandchildren, `setsid` and
//! double-forked escapees, SIGTERM-ignorers) before returning; the new instance starts after.

use std::time::{Duration, Instant};

use crate::common::*;

/// An app that leaves a grandchild in its group, a `setsid` grandchild, and a double-forked
/// daemon (whose parent exits at once), writes their pids, then waits.
fn family_script(agent: &Agent) -> String {
    let pids = agent.path("pids");
    agent.script(
        "family.sh",
        &format!(
            r#"f={pids}.$$
: > $f
sleep 1000 &
echo $! >> $f
setsid sh -c "echo \$\$ >> $f; exec sleep 1000" &
sh -c "setsid sh -c 'echo \$\$ >> $f; exec sleep 1000' & exit 0"
while [ $(wc -l < $f) -lt 3 ]; do sleep 0.01; done
echo $$ >> $f
cp $f $f.done
wait"#
        ),
    )
}

fn family_pids(agent: &Agent, main: u32) -> Vec<u32> {
    let pids = read_pids(&format!("{}.{main}.done", agent.path("pids")), 4);
    assert!(pids.contains(&main));
    for p in &pids {
        assert!(alive(*p), "pid {p} of the family is not running");
    }
    pids
}

#[test]
fn stop_ends_grandchildren_setsid_and_double_forked_descendants() {
    let agent = Agent::start();
    let script = family_script(&agent);
    agent.ok(&["start", "--name", "family", "--", &script]);
    let main = agent.wait_online("family", None);
    let family = family_pids(&agent, main);
    // The setsid one really left the group, and the double-forked one lost its parent.
    let stat = |p: u32| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
    // (ppid, pgrp) of each: fields 4 and 5 of /proc/PID/stat.
    let ids: Vec<(u32, u32)> = family
        .iter()
        .map(|p| {
            let s = stat(*p);
            let f: Vec<u32> = s[s.rfind(')').unwrap() + 4..]
                .split(' ')
                .take(2)
                .map(|x| x.parse().unwrap())
                .collect();
            (f[0], f[1])
        })
        .collect();
    assert!(
        ids.iter()
            .any(|(ppid, pgrp)| !family.contains(ppid) && *pgrp != main),
        "no descendant escaped both the group and the parent chain: {ids:?}"
    );

    agent.ok(&["stop", "family"]);
    // stop has returned: nothing of the tree may remain.
    let survivors: Vec<u32> = family.iter().copied().filter(|p| alive(*p)).collect();
    assert!(survivors.is_empty(), "alive after stop: {survivors:?}");
    assert!(app_processes(&agent.agent_id(), 1).is_empty());
    assert_eq!(agent.status("family"), "stopped");
}

#[test]
fn restart_ends_the_old_tree_before_the_new_one_starts() {
    let agent = Agent::start();
    let script = family_script(&agent);
    agent.ok(&["start", "--name", "family", "--", &script]);
    let main1 = agent.wait_online("family", None);
    let old = family_pids(&agent, main1);
    agent.ok(&["restart", "family"]);
    let survivors: Vec<u32> = old.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "old tree alive after restart: {survivors:?}"
    );
    let main2 = agent.wait_online("family", Some(main1));
    let new = family_pids(&agent, main2);
    // The new tree is the only one: exactly its four processes carry the app's identity.
    let mut expected = new.clone();
    expected.sort();
    wait_until("only the new tree", Duration::from_secs(10), || {
        app_processes(&agent.agent_id(), 1) == expected
    });
}

#[test]
fn a_sigterm_ignoring_tree_is_killed_after_the_timeout() {
    let agent = Agent::start();
    let pids = agent.path("stubborn");
    let script = agent.script(
        "stubborn.sh",
        &format!("trap '' TERM\nsh -c \"trap '' TERM; echo \\$\\$ >> {pids}; while :; do sleep 1; done\" &\necho $$ >> {pids}\nwhile :; do sleep 1; done"),
    );
    agent.ok(&[
        "start",
        "--name",
        "stubborn",
        "--kill-timeout",
        "300ms",
        "--",
        &script,
    ]);
    agent.wait_online("stubborn", None);
    let family = read_pids(&pids, 2);
    let t = Instant::now();
    agent.ok(&["stop", "stubborn"]);
    let took = t.elapsed();
    for p in &family {
        assert!(!alive(*p), "pid {p} survived the stop");
    }
    assert!(
        took >= Duration::from_millis(300),
        "SIGKILL came before the kill timeout ({took:?})"
    );
    let d = agent.describe("stubborn");
    assert_eq!(d["last_exit"]["signal"], 9, "{d}");
}

#[test]
fn leftovers_of_an_exited_main_process_are_ended_before_the_autorestart() {
    let agent = Agent::start();
    let pids = agent.path("orphans");
    // The main process starts a child and exits; the child must not outlive it into the next
    // generation.
    let script = agent.script(
        "leaver.sh",
        &format!("sleep 1000 &\necho $! >> {pids}\nsleep 0.2\nexit 1"),
    );
    agent.ok(&[
        "start",
        "--name",
        "leaver",
        "--restart-delay",
        "50ms",
        "--",
        &script,
    ]);
    let first = read_pids(&pids, 1)[0];
    wait_until(
        "the first child to be ended",
        Duration::from_secs(10),
        || !alive(first),
    );
    let all = read_pids(&pids, 2);
    // At any moment at most one generation's child is alive.
    let live: Vec<u32> = all.iter().copied().filter(|p| alive(*p)).collect();
    assert!(live.len() <= 1, "several generations alive: {live:?}");
}

#[test]
fn a_process_that_clears_its_environment_and_leaves_the_session_is_reported_by_stop() {
    let agent = Agent::start();
    let pidfile = agent.path("escapee");
    let app = agent.script(
        "escape.sh",
        &format!("env -i setsid sh -c 'sleep 1000 & echo $! > {pidfile}'\nexec sleep 1000"),
    );
    agent.ok(&["start", "--name", "esc", "--", &app]);
    let escapee = read_pids(&pidfile, 1)[0];
    // SAFETY: kill on the pid of a process this test's app started.
    let end = || unsafe {
        libc::kill(escapee as i32, libc::SIGKILL);
    };
    let out = agent.run(&["stop", "esc"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let still = alive(escapee);
    let detail = agent.describe("esc");
    end();
    assert!(
        still,
        "the escapee was ended after all: no need to report it"
    );
    assert_eq!(out.status.code(), Some(1), "stop exited 0: {err}");
    assert!(
        err.contains(&format!(
            "pid {escapee} (sleep) left the app's process tree"
        )),
        "{err}"
    );
    assert_eq!(detail["status"], "stopped");
    assert!(
        detail["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("pid {escapee} (sleep)"))),
        "{detail}"
    );
    // The next start clears it.
    std::fs::remove_file(&pidfile).unwrap();
    agent.ok(&["start", "esc"]);
    let again = read_pids(&pidfile, 1)[0];
    agent.wait_online("esc", None);
    assert!(agent.describe("esc")["error"].is_null());
    // SAFETY: as above, for the second instance's escapee.
    unsafe {
        libc::kill(again as i32, libc::SIGKILL);
    }
}

//! `grpm import`: real files written the way PM2's and supervisord's docs show them (PM2's
//! `pm2 ecosystem` template, a supervisord.conf from `echo_supervisord_conf`), imported, started
//! with `grpm start FILE`, and the apps run and do what their commands say.

use std::{fs, path::Path, process::Output, time::Duration};

use crate::common::*;

/// `grpm import KIND FILE` in the agent's environment.
fn import(agent: &Agent, kind: &str, file: &str) -> Output {
    agent.run(&["import", kind, file])
}

/// Imports, asserts success, writes the result beside the source as `apps.toml`; returns its
/// path and the report printed on stderr.
fn import_to_file(agent: &Agent, kind: &str, file: &str) -> (String, String) {
    let out = import(agent, kind, file);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import failed: {err}");
    let dir = Path::new(file).parent().unwrap();
    let toml = dir.join("apps.toml");
    fs::write(&toml, &out.stdout).unwrap();
    (toml.to_string_lossy().into_owned(), err)
}

fn wait_file(path: &Path) -> String {
    let mut text = String::new();
    wait_until(
        &format!("{} to be written", path.display()),
        Duration::from_secs(20),
        || {
            text = fs::read_to_string(path).unwrap_or_default();
            text.ends_with('\n')
        },
    );
    text
}

/// PM2 7's `pm2 ecosystem` template (lib/templates/ecosystem.tpl), with the two scripts it
/// names.
const PM2_TEMPLATE: &str = r#"module.exports = {
  apps : [{
    script: 'index.js',
    watch: '.'
  }, {
    script: './service-worker/',
    watch: ['./service-worker']
  }],

  deploy : {
    production : {
      user : 'SSH_USERNAME',
      host : 'SSH_HOSTMACHINE',
      ref  : 'origin/master',
      repo : 'GIT_REPOSITORY',
      path : 'DESTINATION_PATH',
      'pre-deploy-local': '',
      'post-deploy' : 'npm install && pm2 reload ecosystem.config.js --env production',
      'pre-setup': ''
    }
  }
};
"#;

#[test]
fn the_pm2_ecosystem_template_in_js_runs_under_grpm() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("project");
    fs::create_dir_all(dir.join("service-worker")).unwrap();
    // Markers end in .log: grpm's watch ignores those, so writing them restarts nothing.
    let script = |marker: &str| {
        format!(
            "require('fs').writeFileSync('{marker}', 'ran ' + process.argv.length + '\\n');\n\
             process.on('SIGINT', () => process.exit(0));\nsetInterval(() => {{}}, 1000);\n"
        )
    };
    fs::write(dir.join("index.js"), script("index-ran.log")).unwrap();
    fs::write(
        dir.join("service-worker/index.js"),
        script("service-worker-ran.log"),
    )
    .unwrap();
    let eco = dir.join("ecosystem.config.js");
    fs::write(&eco, PM2_TEMPLATE).unwrap();
    let (toml, report) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    assert!(
        report.contains("not translated: deploy: deployment"),
        "{report}"
    );
    agent.ok(&["start", &toml]);
    agent.wait_online("index", None);
    agent.wait_online("service-worker", None);
    assert_eq!(wait_file(&dir.join("index-ran.log")), "ran 2\n");
    assert_eq!(wait_file(&dir.join("service-worker-ran.log")), "ran 2\n");
    let d = agent.describe("index");
    assert_eq!(d["cmd"], serde_json::json!(["node", "index.js"]));
    assert_eq!(d["stop_signal"], "SIGINT");
    assert_eq!(d["watch"], serde_json::json!(["."]));
    assert_eq!(
        agent.describe("service-worker")["watch"],
        serde_json::json!(["./service-worker"])
    );
    // SIGINT ends them, as under PM2.
    agent.ok(&["stop", "all"]);
    assert_eq!(agent.status("index"), "stopped");
}

#[test]
fn a_pm2_json_file_with_every_key_grpm_can_load_today() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("project");
    fs::create_dir_all(dir.join("srv/conf")).unwrap();
    fs::write(
        dir.join("srv/api.py"),
        "import os, sys, time\n\
         open('api.txt', 'w').write(' '.join(sys.argv[1:]) + ' ' + os.environ['GREETING_TO'] + '\\n')\n\
         time.sleep(1000)\n",
    )
    .unwrap();
    let eco = dir.join("ecosystem.json");
    fs::write(
        &eco,
        r#"{
  "apps": [{
    "name": "api",
    "script": "api.py",
    "args": ["--greeting", "hello world"],
    "cwd": "srv",
    "env": { "GREETING_TO": "grpm" },
    "autorestart": true,
    "max_restarts": 5,
    "restart_delay": 200,
    "kill_timeout": 2000,
    "max_memory_restart": "200M",
    "cron_restart": "0 3 * * *",
    "watch": ["conf"],
    "ignore_watch": ["*.tmp"],
    "watch_delay": 300,
    "time": true,
    "out_file": "/var/log/api-out.log",
    "error_file": "/var/log/api-err.log",
    "exec_mode": "fork",
    "merge_logs": true
  }]
}
"#,
    )
    .unwrap();
    let (toml, report) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    for line in [
        "grpm import: not translated: api: error_file = \"/var/log/api-err.log\": grpm owns its log paths",
        "grpm import: not translated: api: out_file = \"/var/log/api-out.log\": grpm owns its log paths",
        "grpm import: not translated: api: merge_logs = true:",
        "grpm import: note: api: restart_delay: a fixed delay",
        "grpm import: note: api: max_memory_restart: as max_memory",
    ] {
        assert!(report.contains(line), "{line} not in {report}");
    }
    agent.ok(&["start", &toml]);
    agent.wait_online("api", None);
    assert_eq!(
        wait_file(&dir.join("srv/api.txt")),
        "--greeting hello world grpm\n"
    );
    let d = agent.describe("api");
    assert_eq!(
        d["cmd"],
        serde_json::json!(["python3", "api.py", "--greeting", "hello world"])
    );
    assert!(d["cwd"].as_str().unwrap().ends_with("/project/srv"), "{d}");
    assert_eq!(d["kill_timeout_ms"], 2000);
    assert_eq!(d["stop_signal"], "SIGINT");
    assert_eq!(d["max_memory"], 200u64 << 20);
    assert_eq!(d["restart_schedule"], "0 3 * * *");
    assert_eq!(d["watch"], serde_json::json!(["conf"]));
    assert_eq!(d["watch_ignore"], serde_json::json!(["*.tmp"]));
    assert_eq!(d["log_time"], true);
    assert_eq!(d["declared_env"]["GREETING_TO"], "grpm");
}

#[test]
fn a_pm2_yaml_file_runs_under_grpm() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("project");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("worker.sh"),
        "echo \"$MODE $1 $2\" > worker.txt\nexec sleep 1000\n",
    )
    .unwrap();
    let eco = dir.join("ecosystem.config.yaml");
    fs::write(
        &eco,
        "apps:\n  - name: worker\n    script: worker.sh\n    args: one two\n    env:\n      MODE: yaml\n    autorestart: false\n",
    )
    .unwrap();
    let (toml, _) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    agent.ok(&["start", &toml]);
    agent.wait_online("worker", None);
    assert_eq!(wait_file(&dir.join("worker.txt")), "yaml one two\n");
    let d = agent.describe("worker");
    assert_eq!(
        d["cmd"],
        serde_json::json!(["bash", "worker.sh", "one", "two"])
    );
    assert_eq!(d["autorestart"], false);
}

/// PM2's `env_<profile>` becomes an env profile, and `grpm apply --env-profile` picks it: the
/// round trip of `pm2 start ecosystem.config.js --env production`.
#[test]
fn a_pm2_env_profile_applies_with_env_profile() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("profiled");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("worker.sh"),
        "echo \"$MODE\" > mode.txt\nexec sleep 1000\n",
    )
    .unwrap();
    let eco = dir.join("ecosystem.config.json");
    fs::write(
        &eco,
        r#"{ "apps": [{ "name": "worker", "script": "worker.sh",
             "env": { "MODE": "dev" }, "env_production": { "MODE": "prod" } }] }"#,
    )
    .unwrap();
    let (toml, _) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    agent.ok(&["apply", &toml, "--env-profile", "production"]);
    agent.wait_online("worker", None);
    assert_eq!(wait_file(&dir.join("mode.txt")), "prod\n");
    let d = agent.describe("worker");
    assert_eq!(d["env"]["MODE"], "prod");
    assert_eq!(d["env_sources"]["MODE"]["profile"], "production");
    // The same file without the profile: a change back to the declared value.
    let out = agent.run(&["diff", &toml]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn a_js_file_without_node_is_refused_clearly() {
    let agent = Agent::start();
    let eco = agent.path("ecosystem.config.js");
    fs::write(&eco, PM2_TEMPLATE).unwrap();
    let out = agent
        .cmd()
        .env("PATH", agent.path("no-bin-here"))
        .args(["import", "pm2", &eco])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs node, which is not installed"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_files_are_refused_with_what_is_wrong() {
    let agent = Agent::start();
    let write = |name: &str, text: &str| {
        let p = agent.path(name);
        fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        ("pm2", write("eco.txt", "{}"), "ends in .json, .yaml"),
        ("pm2", write("eco.json", "{ apps: [] }"), "not JSON"),
        ("pm2", write("eco.yaml", "apps: ["), "not YAML"),
        ("pm2", agent.path("missing.json"), "No such file"),
        (
            "pm2",
            write("throws.js", "throw new Error('boom')"),
            "node could not load it",
        ),
        (
            "supervisord",
            write("s.conf", "[program:x]\nnonsense\n"),
            "line 2:",
        ),
        (
            "supervisord",
            write("inc.conf", "[include]\nfiles=%(ENV_NOPE_X)s\n"),
            "cannot be expanded",
        ),
    ];
    for (kind, file, what) in cases {
        let err = agent.fails(2, &["import", kind, &file]);
        assert!(err.contains(what), "{file}: {err}");
    }
    // Flags that do not apply.
    let ok = write("ok.json", r#"[{ "script": "a.js" }]"#);
    let err = agent.fails(2, &["import", "pm2", &ok, "--json"]);
    assert!(err.contains("--json does not apply"), "{err}");
    let err = agent.fails(2, &["--host", "box1:7472", "import", "pm2", &ok]);
    assert!(err.contains("talks to no agent"), "{err}");
    // A file with no app at all: nothing printed, exit 1.
    let empty = write("empty.json", r#"{ "apps": [] }"#);
    let err = agent.fails(1, &["import", "pm2", &empty]);
    assert!(err.contains("no app to import"), "{err}");
}

/// supervisord's sample configuration, as `echo_supervisord_conf` prints it.
fn echo_supervisord_conf() -> String {
    let out = std::process::Command::new("echo_supervisord_conf")
        .output()
        .or_else(|_| {
            std::process::Command::new("python3")
                .args(["-c", "from supervisor.confecho import main; main()"])
                .output()
        })
        .expect("echo_supervisord_conf (pip install supervisor: tests/deps.sh)");
    assert!(out.status.success(), "echo_supervisord_conf failed");
    String::from_utf8(out.stdout).unwrap()
}

/// How supervisord itself reads `conf`: each program's argv (its command split as supervisord
/// splits it), environment and directory, from supervisor's own `ServerOptions`.
fn supervisord_reads(conf: &Path) -> serde_json::Value {
    let script = r#"
import sys, json, shlex
from supervisor.options import ServerOptions
o = ServerOptions()
o.configfile = sys.argv[1]
o.process_config(do_usage=False)
print(json.dumps({p.name: {"cmd": shlex.split(p.command), "env": p.environment or {},
                           "directory": p.directory}
                  for g in o.process_group_configs for p in g.process_configs}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "supervisor could not read {}: {}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_supervisord_conf_with_an_include_runs_under_grpm() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("etc");
    fs::create_dir_all(dir.join("conf.d")).unwrap();
    let mut conf = echo_supervisord_conf();
    assert!(conf.contains("[supervisord]"), "{conf}");
    conf.push_str(
        r#"
[program:db]
command=sh -c 'echo "%(program_name)s $DB_NAME" > %(here)s/db.txt; exec sleep 1000'
environment=DB_NAME="main db",OTHER=x
priority=10
stopsignal=TERM
stopwaitsecs=2
autorestart=true
exitcodes=0

[include]
files = conf.d/*.conf
"#,
    );
    let main = dir.join("supervisord.conf");
    fs::write(&main, conf).unwrap();
    fs::write(
        dir.join("conf.d/web.conf"),
        "[program:web]\n\
         command=sh -c 'echo web > web.txt; exec sleep 1000'   ; in its directory\n\
         directory=%(here)s\n\
         priority=20\n\
         startretries=2\n",
    )
    .unwrap();
    let (toml, report) = import_to_file(&agent, "supervisord", main.to_str().unwrap());
    for line in [
        "not translated: [unix_http_server]:",
        "not translated: [supervisord]: the daemon's own settings",
        "not translated: [rpcinterface:supervisor]:",
        "not translated: [supervisorctl]:",
        "not translated: db: exitcodes = 0: grpm has no expected exit codes",
        "note: web: startretries: as max_restarts = 2",
        "note: priority: as depends_on",
    ] {
        assert!(report.contains(line), "{line} not in {report}");
    }
    agent.ok(&["start", &toml]);
    agent.wait_online("db", None);
    agent.wait_online("web", None);
    assert_eq!(wait_file(&dir.join("db.txt")), "db main db\n");
    assert_eq!(wait_file(&dir.join("conf.d/web.txt")), "web\n");
    let db = agent.describe("db");
    assert_eq!(db["kill_timeout_ms"], 2000);
    assert_eq!(db["stop_signal"], "SIGTERM");
    assert_eq!(db["declared_env"]["OTHER"], "x");
    let web = agent.describe("web");
    assert_eq!(
        web["depends_on"],
        serde_json::json!([{ "app": "db", "condition": "started" }])
    );
    assert!(
        web["cwd"].as_str().unwrap().ends_with("/etc/conf.d"),
        "{web}"
    );
    // What supervisord itself makes of the same file.
    let theirs = supervisord_reads(&main);
    for name in ["db", "web"] {
        let ours = agent.describe(name);
        assert_eq!(ours["cmd"], theirs[name]["cmd"], "{name}");
        assert_eq!(ours["declared_env"], theirs[name]["env"], "{name}");
        if let Some(d) = theirs[name]["directory"].as_str() {
            assert_eq!(ours["cwd"], d, "{name}");
        }
    }
    // Ordering: stopping db stops web first, as supervisord stops by descending priority.
    let out = agent.ok(&["stop", "db"]);
    assert!(out.contains("web"), "{out}");
    assert_eq!(agent.status("web"), "stopped");
}

/// The rows of `name`'s instances, in instance order.
fn instance_rows(agent: &Agent, name: &str) -> Vec<serde_json::Value> {
    let mut r: Vec<serde_json::Value> = agent
        .list()
        .into_iter()
        .filter(|a| a["name"] == name)
        .collect();
    r.sort_by_key(|a| a["instance"].as_u64());
    r
}

/// PM2's `instances: 2` becomes `instances = 2`, and `grpm apply` runs two instances, each
/// knowing its number. A changed file then reloads them (new processes, one at a time).
#[test]
fn a_pm2_app_of_two_instances_applies_as_two_instances() {
    let agent = Agent::start();
    let dir = agent.dir.path().join("scaled");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("worker.sh"),
        "echo \"$MODE $GRPM_INSTANCE\" > \"out-$GRPM_INSTANCE.txt\"\nexec sleep 1000\n",
    )
    .unwrap();
    let eco = dir.join("ecosystem.config.json");
    let write = |mode: &str| {
        let text = format!(
            r#"{{ "apps": [{{ "name": "worker", "script": "worker.sh", "instances": 2,
                 "env": {{ "MODE": "{mode}" }} }}] }}"#
        );
        fs::write(&eco, text).unwrap();
    };
    write("one");
    let (toml, _) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    assert!(
        fs::read_to_string(&toml).unwrap().contains("instances = 2"),
        "{toml}"
    );
    agent.ok(&["apply", &toml]);
    let mut first = Vec::new();
    wait_until("two instances online", Duration::from_secs(30), || {
        let r = instance_rows(&agent, "worker");
        first = r.iter().filter_map(|a| a["pid"].as_u64()).collect();
        r.len() == 2 && r.iter().all(|a| a["status"] == "online")
    });
    assert_eq!(wait_file(&dir.join("out-0.txt")), "one 0\n");
    assert_eq!(wait_file(&dir.join("out-1.txt")), "one 1\n");
    // A changed file: apply reloads both instances with the new spec.
    fs::remove_file(dir.join("out-0.txt")).unwrap();
    fs::remove_file(dir.join("out-1.txt")).unwrap();
    write("two");
    let (toml, _) = import_to_file(&agent, "pm2", eco.to_str().unwrap());
    agent.ok(&["apply", &toml]);
    assert_eq!(wait_file(&dir.join("out-0.txt")), "two 0\n");
    assert_eq!(wait_file(&dir.join("out-1.txt")), "two 1\n");
    let r = instance_rows(&agent, "worker");
    assert_eq!(r.len(), 2);
    for (row, old) in r.iter().zip(&first) {
        assert_eq!(row["status"], "online");
        assert_ne!(row["pid"].as_u64(), Some(*old), "a new process: {row}");
    }
    assert_eq!(agent.describe("worker")["env"]["MODE"], "two");
    let events = agent.ok(&["events", "--no-follow", "--json", "--from", "0"]);
    assert!(events.contains("\"reloaded\""), "{events}");
}

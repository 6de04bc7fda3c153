//! PM2 translations, a key at a time: the grpm file written (as text, and read back by grpm's
//! own app-file reader) and the reports.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::cli::{appfile, import::finish, import::toml_out::render};

/// Translates `doc` as if its file were in `dir`, on a machine with 8 CPUs: the app file's
/// body (no header) and the report lines.
fn import_in(doc: &Value, dir: &Path) -> (String, Vec<String>) {
    let ctx = Context {
        dir: dir.to_path_buf(),
        cpus: 8,
    };
    let Translation { apps, mut notes } = translate(doc, &ctx);
    let apps = finish(apps, dir, &mut notes);
    let text = render("", &apps).unwrap();
    (text.trim_start_matches('\n').to_string(), notes.lines())
}

fn import(doc: &Value) -> (String, Vec<String>) {
    import_in(doc, Path::new("/nonexistent"))
}

fn has(lines: &[String], start: &str) -> bool {
    lines.iter().any(|l| l.starts_with(start))
}

/// `pm2 ecosystem`'s template (PM2 7's lib/templates/ecosystem.tpl), as node gives it.
#[test]
fn the_pm2_ecosystem_template() {
    let doc = json!({
        "apps": [
            { "script": "index.js", "watch": "." },
            { "script": "./service-worker/", "watch": ["./service-worker"] }
        ],
        "deploy": { "production": { "user": "SSH_USERNAME", "host": "SSH_HOSTMACHINE",
            "ref": "origin/master", "repo": "GIT_REPOSITORY", "path": "DESTINATION_PATH",
            "pre-deploy-local": "", "post-deploy": "npm install && pm2 reload ecosystem.config.js --env production",
            "pre-setup": "" } }
    });
    let (text, notes) = import(&doc);
    assert_eq!(
        text,
        r#"[[app]]
name = "index"
cmd = ["node", "index.js"]
stop_signal = "SIGINT"
watch = ["."]

[[app]]
name = "service-worker"
cmd = ["node", "./service-worker/"]
stop_signal = "SIGINT"
watch = ["./service-worker"]
"#
    );
    assert!(
        has(&notes, "not translated: deploy: deployment"),
        "{notes:?}"
    );
    assert!(
        has(&notes, "note: stop_signal: every app stops with SIGINT"),
        "{notes:?}"
    );
}

#[test]
fn every_translated_key() {
    let doc = json!({ "apps": [{
        "name": "api",
        "script": "server.js",
        "args": "--port 8080 'two words'",
        "node_args": ["--max-old-space-size=512"],
        "cwd": "srv",
        "env": { "NODE_ENV": "development", "WORKERS": 4, "DEBUG": true },
        "env_production": { "NODE_ENV": "production" },
        "instances": 4,
        "autorestart": false,
        "max_restarts": 10,
        "restart_delay": 4000,
        "kill_timeout": 1600,
        "max_memory_restart": "200M",
        "cron_restart": "0 3 * * *",
        "watch": ["src", "config"],
        "ignore_watch": ["*.tmp"],
        "watch_delay": 1000,
        "time": true,
        "user": "nobody",
        "gid": "nogroup",
        "port": 8080,
    }]});
    let (text, notes) = import(&doc);
    assert_eq!(
        text,
        r#"[[app]]
name = "api"
cmd = ["node", "--max-old-space-size=512", "server.js", "--port", "8080", "two words"]
cwd = "srv"
instances = 4
kill_timeout = "1600ms"
stop_signal = "SIGINT"
autorestart = false
restart_delay = "4s"
restart_delay_max = "4s"
max_restarts = 10
max_memory = "200M"
restart_schedule = "0 3 * * *"
watch = ["src", "config"]
watch_ignore = ["*.tmp"]
watch_debounce = "1s"
log_time = true
user = "nobody"
group = "nogroup"

[app.env]
DEBUG = "true"
NODE_ENV = "development"
PORT = "8080"
WORKERS = "4"

[app.env_profiles.production]
NODE_ENV = "production"
"#
    );
    for n in [
        "note: api: max_restarts: PM2 counts restarts",
        "note: api: restart_delay: a fixed delay",
        "note: api: max_memory_restart: as max_memory",
        "note: api: ignore_watch: as watch_ignore",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:?}");
    }
    assert!(!has(&notes, "not translated"), "{notes:?}");
}

#[test]
fn the_output_loads_in_grpm() {
    // Without the keys this branch's reader does not know yet (instances, env_profiles).
    let doc = json!([{ "name": "w", "script": "w.py", "args": ["-u"], "env": { "A": "1" },
        "max_memory_restart": 1073741824u64, "exp_backoff_restart_delay": 100,
        "cron": "*/5 * * * *", "watch": true, "kill_timeout": 250 }]);
    let (text, _) = import(&doc);
    let apps = appfile::parse(&text, "out.toml", Some(Path::new("/srv")), None).unwrap();
    let w = &apps[0];
    assert_eq!(w.cmd, ["python3", "w.py", "-u"]);
    assert_eq!(w.max_memory, Some(1 << 30));
    assert_eq!(w.restart_delay, Some(Duration::from_millis(100)));
    assert_eq!(w.restart_delay_max, Some(Duration::from_secs(15)));
    assert_eq!(w.restart_schedule.as_deref(), Some("*/5 * * * *"));
    assert_eq!(w.watch, ["."]);
    assert_eq!(w.kill_timeout, Some(Duration::from_millis(250)));
    assert_eq!(w.stop_signal.map(|s| s.to_string()), Some("SIGINT".into()));
}

#[test]
fn untranslatable_keys_are_reported_with_a_reason() {
    let doc = json!({ "apps": [{
        "name": "api", "script": "app.js", "exec_mode": "cluster", "merge_logs": true,
        "out_file": "/var/log/api.out", "error_file": "/var/log/api.err",
        "log_file": "/var/log/api.log", "pid_file": "/run/api.pid", "min_uptime": "10s",
        "autostart": false, "wait_ready": true, "listen_timeout": 3000,
        "stop_exit_codes": [0], "namespace": "x", "vizion": false, "treekill": false,
        "instance_var": "INSTANCE_ID", "frobnicate": 1,
    }], "something": 1 });
    let (text, notes) = import(&doc);
    assert!(text.contains("name = \"api\""), "{text}");
    for key in [
        "exec_mode = \"cluster\": grpm has no Node cluster mode",
        "merge_logs = true:",
        "out_file = \"/var/log/api.out\": grpm owns its log paths: $GRPM_HOME/logs/<id>-api.out.log",
        "error_file = \"/var/log/api.err\": grpm owns its log paths",
        "log_file = \"/var/log/api.log\":",
        "pid_file = \"/run/api.pid\":",
        "min_uptime = \"10s\":",
        "autostart = false:",
        "wait_ready = true: grpm has no process.send('ready')",
        "listen_timeout = 3000:",
        "stop_exit_codes = [0]:",
        "namespace = \"x\":",
        "vizion = false:",
        "treekill = false:",
        "instance_var = \"INSTANCE_ID\":",
        "frobnicate = 1: not a PM2 app key grpm knows",
    ] {
        assert!(
            has(&notes, &format!("not translated: api: {key}")),
            "{key} not in {notes:#?}"
        );
    }
    assert!(has(&notes, "not translated: something = 1:"), "{notes:?}");
}

#[test]
fn interpreters_follow_pm2s_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server"), "").unwrap();
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    let doc = json!([
        { "name": "a", "script": "worker.py" },
        { "name": "b", "script": "run.sh", "args": "x" },
        { "name": "c", "script": "server" },
        { "name": "d", "script": "npm", "args": "start" },
        { "name": "e", "script": "/usr/bin/env", "interpreter": "none", "args": ["true"] },
        { "name": "f", "script": "app.rb", "interpreter": "/opt/ruby/bin/ruby", "interpreter_args": "-W0" },
        { "name": "g", "script": "pkg" },
        { "name": "h", "script": "server", "interpreter_args": "-x" },
    ]);
    let (text, notes) = import_in(&doc, dir.path());
    let apps = appfile::parse(&text, "out.toml", Some(dir.path()), None).unwrap();
    let cmds: Vec<Vec<String>> = apps.into_iter().map(|a| a.cmd).collect();
    assert_eq!(
        cmds,
        [
            vec!["python3", "worker.py"],
            vec!["bash", "run.sh", "x"],
            vec!["./server"],
            vec!["npm", "start"],
            vec!["/usr/bin/env", "true"],
            vec!["/opt/ruby/bin/ruby", "-W0", "app.rb"],
            vec!["node", "pkg"],
            vec!["./server"],
        ]
    );
    assert!(
        has(
            &notes,
            "not translated: h: interpreter_args: the script runs by itself"
        ),
        "{notes:?}"
    );
}

#[test]
fn restart_delays_and_instances() {
    let doc = json!([
        { "name": "grow", "script": "a.js", "exp_backoff_restart_delay": 100, "restart_delay": 50 },
        { "name": "big", "script": "a.js", "exp_backoff_restart_delay": 20000 },
        { "name": "zero", "script": "a.js", "restart_delay": 0 },
        { "name": "max", "script": "a.js", "instances": "max" },
        { "name": "minus", "script": "a.js", "instances": -1 },
        { "name": "one", "script": "a.js", "instances": 1 },
        { "name": "none", "script": "a.js", "max_restarts": 0 },
    ]);
    let (text, notes) = import(&doc);
    let tables: Vec<&str> = text.split("[[app]]").skip(1).collect();
    assert!(tables[0].contains("restart_delay = \"100ms\"\nrestart_delay_max = \"15s\""));
    assert!(tables[1].contains("restart_delay = \"20s\"\nrestart_delay_max = \"20s\""));
    assert!(!tables[2].contains("restart_delay"), "{}", tables[2]);
    assert!(tables[3].contains("instances = 8"), "{}", tables[3]);
    assert!(tables[4].contains("instances = 7"), "{}", tables[4]);
    assert!(!tables[5].contains("instances"), "{}", tables[5]);
    assert!(tables[6].contains("max_restarts = 1"), "{}", tables[6]);
    for n in [
        "note: grow: exp_backoff_restart_delay: as restart_delay = 100ms doubling",
        "not translated: grow: restart_delay = 50: exp_backoff_restart_delay takes its place",
        "note: zero: restart_delay: 0: PM2 restarts at once",
        "note: max: instances = \"max\": written as 8, from this machine's 8 CPUs",
        "note: minus: instances = -1: written as 7",
        "note: none: max_restarts: PM2 counts restarts that came sooner than min_uptime after a start; grpm counts restarts within restart_window (60s) (written as 1",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:#?}");
    }
}

#[test]
fn names_values_and_refusals() {
    let doc = json!({ "apps": [
        { "name": "My App", "script": "a.js", "log_date_format": "YYYY-MM-DD" },
        { "name": "My App", "script": "b.js", "cron_restart": "61 * * * *",
          "max_memory_restart": "10K", "env": { "NESTED": { "x": 1 } }, "env_staging": "x" },
        { "name": "noscript" },
        { "script": "c.js", "cron_restart": 0 },
        "not an app",
    ]});
    let (text, notes) = import(&doc);
    assert!(
        text.contains("name = \"My-App\"\ncmd = [\"node\", \"a.js\"]"),
        "{text}"
    );
    assert!(text.contains("log_time = true"), "{text}");
    assert!(text.contains("name = \"My-App-2\""), "{text}");
    assert!(
        text.contains("name = \"c\"\ncmd = [\"node\", \"c.js\"]\nstop_signal = \"SIGINT\"\n"),
        "{text}"
    );
    assert!(!text.contains("restart_schedule"), "{text}");
    assert!(!text.contains("env_profiles"), "{text}");
    for n in [
        "note: My-App: name: \"My App\" renamed \"My-App\"",
        "note: My-App-2: name: \"My App\" renamed \"My-App-2\": grpm names are letters, digits, '.', '_' and '-'; another app has",
        "note: My-App: log_date_format: as log_time = true",
        "not translated: My-App-2: cron_restart (as restart_schedule): \"61 * * * *\"",
        "not translated: My-App-2: max_memory_restart (as max_memory): max_memory is below 1M",
        "not translated: My-App-2: env.NESTED = {\"x\":1}:",
        "not translated: noscript: script: missing",
        "not translated: My-App-2: env_staging = \"x\": not an object of variables",
        "not translated: apps[4] = \"not an app\": an app is an object",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:#?}");
    }
}

#[test]
fn yaml_reads_as_json_does() {
    let y = yaml(
        "apps:\n  - name: api\n    script: app.js\n    instances: 2\n    env:\n      PORT: 8080\n      RATIO: 1.5\n      ON: true\n    watch: false\n",
    )
    .unwrap();
    assert_eq!(
        y,
        json!({ "apps": [{ "name": "api", "script": "app.js", "instances": 2,
            "env": { "PORT": 8080, "RATIO": 1.5, "ON": true }, "watch": false }] })
    );
    assert!(yaml("apps: [").unwrap_err().starts_with("not YAML"));
}

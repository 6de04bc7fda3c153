//! supervisord translations: expansions, `environment`, every program key, priority as ordering,
//! the sections that are not programs, and `[include]`.

use std::path::Path;

use super::*;
use crate::cli::{appfile, import::finish, import::toml_out::render};

fn ctx() -> Context {
    Context {
        env: [("HOME".to_string(), "/home/u".to_string())].into(),
        host: "box1".into(),
    }
}

/// The app file body (no header) and the report lines for a configuration's text.
fn import(text: &str) -> (String, Vec<String>) {
    let sections = ini::parse(text).unwrap();
    let Translation { apps, mut notes } = translate(&sections, &ctx());
    let apps = finish(apps, Path::new("/srv"), &mut notes);
    let out = render("", &apps).unwrap();
    (out.trim_start_matches('\n').to_string(), notes.lines())
}

fn has(lines: &[String], start: &str) -> bool {
    lines.iter().any(|l| l.starts_with(start))
}

#[test]
fn expansions_as_python_formats_them() {
    let vars = |n: &str| match n {
        "program_name" => Some("web".to_string()),
        "process_num" => Some("3".to_string()),
        "ENV_HOME" => Some("/home/u".to_string()),
        _ => None,
    };
    assert_eq!(
        expand(
            "%(program_name)s-%(process_num)02d 100%% %(ENV_HOME)s",
            &vars
        )
        .unwrap(),
        (
            "web-03 100% /home/u".to_string(),
            vec!["ENV_HOME".to_string()]
        )
    );
    assert!(expand("%(nope)s", &vars)
        .unwrap_err()
        .contains("cannot be expanded"));
    assert!(expand("50%", &vars)
        .unwrap_err()
        .contains("badly formatted"));
    assert!(expand("%(program_name)d", &vars)
        .unwrap_err()
        .contains("not a number"));
}

#[test]
fn environment_pairs_as_supervisord_reads_them() {
    assert_eq!(
        key_value_pairs("A=\"1\",B='x, y',C=/usr/bin:/bin,\n  D=\"\"").unwrap(),
        [
            ("A".to_string(), "1".to_string()),
            ("B".into(), "x, y".into()),
            ("C".into(), "/usr/bin:/bin".into()),
            ("D".into(), "".into()),
        ]
    );
    assert!(key_value_pairs("A=1,B").is_err());
    assert!(key_value_pairs("A=\"1").is_err());
}

#[test]
fn every_program_key() {
    let (text, notes) = import(
        r#"
[program:web]
command=/usr/bin/python3 -m http.server 8080 --directory "%(ENV_HOME)s/www"
directory=/srv/%(program_name)s
environment=PORT="8080",GREETING="hello, world",NAME=%(program_name)s
autorestart=unexpected
startretries=5
stopsignal=INT
stopwaitsecs=3
user=nobody
umask=022
numprocs=2
process_name=%(program_name)s_%(process_num)02d
stdout_logfile=/var/log/web.out
stderr_logfile=/var/log/web.err
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=3
stopasgroup=true
killasgroup=true
autostart=true
"#,
    );
    assert_eq!(
        text,
        r#"[[app]]
name = "web"
cmd = ["/usr/bin/python3", "-m", "http.server", "8080", "--directory", "/home/u/www"]
cwd = "/srv/web"
instances = 2
kill_timeout = "3s"
stop_signal = "SIGINT"
autorestart = true
max_restarts = 5
log_max_size = "10M"
log_keep = 3
user = "nobody"
umask = "022"

[app.env]
GREETING = "hello, world"
NAME = "web"
PORT = "8080"
"#
    );
    for n in [
        "note: web: command: %(ENV_HOME)s expanded with this shell's value at import",
        "note: web: autorestart = unexpected: as autorestart = true",
        "note: web: startretries: as max_restarts = 5",
        "not translated: web: process_name = %(program_name)s_%(process_num)02d: grpm names",
        "not translated: web: stdout_logfile = /var/log/web.out: grpm owns its log paths",
        "not translated: web: stderr_logfile = /var/log/web.err: grpm owns its log paths",
        "note: web: stdout_logfile_maxbytes: as log_max_size",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:#?}");
    }
}

#[test]
fn untranslatable_program_keys_are_reported() {
    let (text, notes) = import(
        "[program:job]\ncommand=sleep 1\nautostart=false\nstartsecs=10\nexitcodes=0,2\n\
         redirect_stderr=true\nstopasgroup=false\nstdout_syslog=true\nserverurl=AUTO\n\
         stdout_events_enabled=true\nstopwaitsecs=0\nbogus=1\nautorestart=false\n",
    );
    assert!(text.contains("autorestart = false"), "{text}");
    for n in [
        "not translated: job: autostart = false: grpm start FILE starts every app",
        "not translated: job: startsecs = 10:",
        "not translated: job: exitcodes = 0,2: grpm has no expected exit codes",
        "not translated: job: redirect_stderr = true: grpm keeps stdout and stderr apart",
        "note: job: stopasgroup = false: grpm always signals the app's whole tree",
        "not translated: job: stdout_syslog = true:",
        "not translated: job: serverurl = AUTO:",
        "not translated: job: stdout_events_enabled = true:",
        "not translated: job: stopwaitsecs = 0:",
        "not translated: job: bogus = 1: not a program key grpm knows",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:#?}");
    }
}

#[test]
fn priority_becomes_a_chain_of_started_dependencies() {
    let (text, notes) = import(
        "[program:db]\ncommand=sleep 100\npriority=10\n\
         [program:cache]\ncommand=sleep 100\npriority=10\n\
         [program:api]\ncommand=sleep 100\npriority=20\n\
         [program:web]\ncommand=sleep 100\n",
    );
    let apps = appfile::parse(&text, "out.toml", Some(Path::new("/srv")), None).unwrap();
    let deps: Vec<(String, Vec<String>)> = apps
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.depends_on
                    .iter()
                    .map(|d| format!("{}:{}", d.app, d.condition.word()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        deps,
        [
            ("db".to_string(), vec![]),
            ("cache".into(), vec![]),
            (
                "api".into(),
                vec!["db:started".to_string(), "cache:started".into()]
            ),
            ("web".into(), vec!["api:started".to_string()]),
        ]
    );
    assert!(
        has(
            &notes,
            "note: priority: as depends_on (condition \"started\")"
        ),
        "{notes:?}"
    );
    // One priority level: no ordering to express.
    let (text, notes) = import("[program:a]\ncommand=sleep 1\npriority=5\n");
    assert!(!text.contains("depends_on"), "{text}");
    assert!(!has(&notes, "note: priority"), "{notes:?}");
}

#[test]
fn sections_that_are_not_programs_are_reported() {
    let (_, notes) = import(
        "[unix_http_server]\nfile=/tmp/supervisor.sock\n[supervisord]\nlogfile=/tmp/s.log\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = x\n\
         [supervisorctl]\nserverurl=unix:///tmp/supervisor.sock\n\
         [group:g]\nprograms=a,b\n[eventlistener:l]\ncommand=x\n[fcgi-program:f]\ncommand=x\n\
         [weird]\nx=1\n[program:a]\ncommand=sleep 1\n",
    );
    for n in [
        "not translated: [unix_http_server]: supervisord's XML-RPC listener",
        "not translated: [supervisord]: the daemon's own settings",
        "not translated: [rpcinterface:supervisor]: a supervisord plugin",
        "not translated: [supervisorctl]: the client's settings",
        "not translated: [group:g]: grpm has no groups: its programs (a,b)",
        "not translated: [eventlistener:l]: grpm publishes events",
        "not translated: [fcgi-program:f]: grpm does not hold a FastCGI socket",
        "not translated: [weird]: not a supervisord section",
    ] {
        assert!(has(&notes, n), "{n} not in {notes:#?}");
    }
}

#[test]
fn includes_are_followed_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(d.join("conf.d")).unwrap();
    std::fs::create_dir_all(d.join("more")).unwrap();
    std::fs::write(
        d.join("supervisord.conf"),
        "[supervisord]\nlogfile=%(here)s/s.log\n[program:main]\ncommand=sleep 1\n\
         [include]\nfiles = conf.d/*.conf more/b.ini missing/*.conf\n",
    )
    .unwrap();
    std::fs::write(
        d.join("conf.d/2-b.conf"),
        "[program:b]\ncommand=sleep 2\ndirectory=%(here)s\n[include]\nfiles=x.conf\n",
    )
    .unwrap();
    std::fs::write(d.join("conf.d/1-a.conf"), "[program:a]\ncommand=sleep 3\n").unwrap();
    std::fs::write(d.join("conf.d/ignored.txt"), "[program:no]\ncommand=x\n").unwrap();
    std::fs::write(d.join("more/b.ini"), "[program:main]\ncommand=sleep 4\n").unwrap();
    let t = import_file(&d.join("supervisord.conf"));
    let names: Vec<(&str, &[String], Option<&str>)> = t
        .apps
        .iter()
        .map(|a| (a.name.as_str(), a.cmd.as_slice(), a.cwd.as_deref()))
        .collect();
    let conf_d = d.join("conf.d").to_string_lossy().into_owned();
    assert_eq!(
        names,
        [
            ("main", &["sleep".to_string(), "4".into()][..], None),
            ("a", &["sleep".to_string(), "3".into()][..], None),
            (
                "b",
                &["sleep".to_string(), "2".into()][..],
                Some(conf_d.as_str())
            ),
        ]
    );
    let notes = t.notes.lines();
    assert!(has(&notes, "not translated: [include] in "), "{notes:?}");
    assert!(
        has(&notes, "note: [include]: no file matches "),
        "{notes:?}"
    );
}

fn import_file(file: &Path) -> Translation {
    let mut notes = Notes::default();
    let sections = load(file, &ctx(), &mut notes).unwrap();
    let mut t = translate(&sections, &ctx());
    notes.0.append(&mut t.notes.0);
    t.notes = notes;
    t
}

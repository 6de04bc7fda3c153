//! The proto as a public contract: `buf lint` (STANDARD and COMMENTS, configured by buf.yaml)
//! finds nothing. buf comes from npm's `@bufbuild/buf`, which `tests/deps.sh` installs under
//! `.tools/`; without it the test fails, it does not skip.

use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `$BUF`, else the one tests/deps.sh installs, else `buf` on PATH.
fn buf() -> String {
    if let Ok(p) = std::env::var("BUF") {
        return p;
    }
    let local = format!("{ROOT}/.tools/node_modules/.bin/buf");
    if std::path::Path::new(&local).exists() {
        return local;
    }
    "buf".into()
}

fn lint(extra: &[&str]) -> Output {
    Command::new(buf())
        .arg("lint")
        .args(extra)
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("cannot run buf ({e}); run `bash tests/deps.sh` (or set BUF)"))
}

#[test]
fn buf_lint_finds_nothing() {
    let out = lint(&[]);
    assert!(
        out.status.success(),
        "buf lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// buf.yaml exempts two rules for the whole file; without the exemption, exactly the three
/// findings it names come back, so the exemption hides nothing new (a new RPC whose response
/// is not `<Rpc>Response` fails here).
#[test]
fn the_exemptions_cover_only_the_three_public_names() {
    let config =
        r#"{"version":"v2","modules":[{"path":"proto"}],"lint":{"use":["STANDARD","COMMENTS"]}}"#;
    let out = lint(&["--config", config]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut findings: Vec<&str> = text
        .lines()
        .map(|l| l.splitn(4, ':').nth(3).unwrap_or(l))
        .collect();
    findings.sort_unstable();
    assert_eq!(
        findings,
        [
            r#"RPC response type "Event" should be named "SubscribeResponse" or "ProcessManagerSubscribeResponse"."#,
            r#"RPC response type "LogChunk" should be named "LogsResponse" or "ProcessManagerLogsResponse"."#,
            r#"Service name "ProcessManager" should be suffixed with "Service"."#,
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

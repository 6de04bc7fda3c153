//! The environment a new app captures from the shell that creates it (on the local agent),
//! without what only meant something to the tool that launched the CLI: `cargo run -- start
//! ...` must not bake cargo's and rustup's variables into the apps it starts.

use std::path::{Path, PathBuf};

use crate::model::Env;

/// This process's environment, as the base of apps it creates (and of `restart
/// --update-env`). Left out: grpm's own app identity, the launcher's variables (see
/// [`launcher_only`]), the library paths cargo added, and entries that are not UTF-8 (they
/// cannot cross the API; said on stderr).
pub fn caller_env() -> Env {
    let mut vars = Env::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                if !launcher_only(&k) {
                    vars.insert(k, v);
                }
            }
            (k, _) => eprintln!(
                "grpm: warning: environment variable {:?} is not UTF-8; left out",
                k.unwrap_or_else(|os| os.to_string_lossy().into_owned())
            ),
        }
    }
    // `CARGO` is set by cargo for what it runs: the CLI runs under `cargo run`.
    if std::env::var_os("CARGO").is_some() {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from);
        if let Some(ld) = vars.remove("LD_LIBRARY_PATH") {
            let kept = without_cargo_paths(&ld, exe_dir.as_deref(), rustup_home.as_deref());
            if !kept.is_empty() {
                vars.insert("LD_LIBRARY_PATH".into(), kept);
            }
        }
    }
    vars
}

/// Variables left out of a captured environment: grpm's app identity (`GRPM_APP_ID`,
/// `GRPM_AGENT_ID`, `GRPM_APP_NAME`, `GRPM_INSTANCE`, `GRPM_SLOT`: an app started from inside another app is not part of
/// it), and what cargo and rustup set for the program they run (`CARGO`, `CARGO_*`,
/// `RUSTUP_*`, `RUST_RECURSION_COUNT`). `RUST_LOG`, `RUST_BACKTRACE`, `RUSTFLAGS`, `RUSTC*` are
/// kept: apps (and the builds they run) use them.
pub fn launcher_only(name: &str) -> bool {
    matches!(
        name,
        "GRPM_APP_ID"
            | "GRPM_AGENT_ID"
            | "GRPM_APP_NAME"
            | "GRPM_INSTANCE"
            | "GRPM_SLOT"
            | "CARGO"
            | "RUST_RECURSION_COUNT"
    ) || name.starts_with("CARGO_")
        || name.starts_with("RUSTUP_")
}

/// `LD_LIBRARY_PATH` without the entries `cargo run` prepends: the binary's directory and its
/// `deps`, and the toolchain's libraries under `RUSTUP_HOME`.
fn without_cargo_paths(ld: &str, exe_dir: Option<&Path>, rustup_home: Option<&Path>) -> String {
    let added = |entry: &str| {
        let p = Path::new(entry);
        exe_dir.is_some_and(|d| p == d || p == d.join("deps"))
            || rustup_home.is_some_and(|r| p.starts_with(r.join("toolchains")))
    };
    ld.split(':')
        .filter(|e| !added(e))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_variables_are_left_out_and_the_apps_own_kept() {
        for v in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "RUSTUP_TOOLCHAIN",
            "RUSTUP_HOME",
            "RUST_RECURSION_COUNT",
            "GRPM_APP_ID",
        ] {
            assert!(launcher_only(v), "{v}");
        }
        for v in [
            "RUST_LOG",
            "RUST_BACKTRACE",
            "RUSTFLAGS",
            "RUSTC_WRAPPER",
            "CARGOX",
            "PATH",
            "LD_LIBRARY_PATH",
            "GRPM_HOME",
        ] {
            assert!(!launcher_only(v), "{v}");
        }
    }

    #[test]
    fn cargos_library_paths_are_dropped_and_the_users_kept() {
        let ld = "/w/target/release:/w/target/release/deps:/r/toolchains/stable/lib/rustlib/x/lib:\
                  /r/toolchains/stable/lib:/opt/lib";
        let kept = without_cargo_paths(
            ld,
            Some(Path::new("/w/target/release")),
            Some(Path::new("/r")),
        );
        assert_eq!(kept, "/opt/lib");
        assert_eq!(
            without_cargo_paths("/opt/lib:/usr/local/lib", None, None),
            "/opt/lib:/usr/local/lib"
        );
    }
}

//! Words PM2 users type that grpm has no command for: a one-line answer saying what grpm does
//! instead, in place of clap's "a similar subcommand exists" tip (`save` is not `stop`).

/// The answer to `grpm WORD` when WORD is a PM2 command grpm does not have.
pub fn answer(word: &str) -> Option<&'static str> {
    Some(match word {
        "save" | "dump" => {
            "grpm saves every change automatically (to $GRPM_HOME/state.json); there is nothing \
             to save"
        }
        "resurrect" => {
            "grpm resurrects by itself: an agent that starts (any grpm command starts one) starts \
             again every app that should be running"
        }
        "unstartup" => {
            "remove the unit that `grpm startup systemd --install` wrote: `systemctl disable \
             --now grpm-$USER.service` (or, for --user, `systemctl --user disable --now grpm`)"
        }
        "jlist" => "use `grpm list --json`",
        "prettylist" => "use `grpm describe all` (or `grpm describe all --json`)",
        "ps" | "status" => "use `grpm list` (or `grpm ls`)",
        _ => return None,
    })
}

/// What `grpm startup` alone says: the boot command is `startup systemd`.
pub const STARTUP: &str = "startup needs a system: `grpm startup systemd [--user] \
    [--install]` prints (or, with --install, writes) a systemd unit that starts the agent at boot";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn answered_words_are_not_commands() {
        let cli = Cli::command();
        for w in [
            "save",
            "dump",
            "resurrect",
            "unstartup",
            "jlist",
            "prettylist",
            "ps",
            "status",
        ] {
            assert!(answer(w).is_some(), "{w}");
            assert!(
                cli.find_subcommand(w).is_none(),
                "{w} is a command now: drop its answer"
            );
        }
        assert_eq!(answer("stop"), None);
    }
}

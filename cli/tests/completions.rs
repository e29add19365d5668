//! Shell completions and man pages come from the CLI definition: bash
//! completes real commands, every command has its page.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn weft_out(args: &[&str]) -> String {
    let out = run_timeout(Command::new(WEFT).args(args), CMD_TIMEOUT);
    assert!(out.status.success(), "weft {args:?}:\n{}", describe(&out));
    text(&out.stdout)
}

/// What bash completes for `line` (words split on spaces) with weft's
/// completion script loaded.
fn bash_complete(line: &str) -> Vec<String> {
    let script = format!(
        r#"source <("{WEFT}" completions bash)
line='{line}'
read -ra COMP_WORDS <<< "$line"
[[ "$line" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="$line"; COMP_POINT=${{#line}}
_weft weft "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let out = run_timeout(Command::new("bash").args(["-c", &script]), CMD_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_commands_and_subcommands() {
    assert_eq!(bash_complete("weft cap"), ["capture"]);
    let network = bash_complete("weft network ");
    for sub in ["create", "ls", "inspect", "rm"] {
        assert!(
            network.iter().any(|w| w == sub),
            "{sub} missing: {network:?}"
        );
    }
    let capture = bash_complete("weft capture --");
    assert!(capture.iter().any(|w| w == "--network"), "{capture:?}");
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = weft_out(&["completions", shell]);
        for cmd in ["capture", "reset", "attach", "daemon"] {
            assert!(script.contains(cmd), "{shell} script lacks {cmd}");
        }
    }
    let out = run_timeout(
        Command::new(WEFT).args(["completions", "tcsh"]),
        CMD_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("possible values"),
        "{}",
        describe(&out)
    );
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = TempDir::new("man");
    let out = run_timeout(Command::new(WEFT).arg("man").arg(dir.path()), CMD_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    for page in [
        "weft.1",
        "weft-capture.1",
        "weft-daemon.1",
        "weft-network-create.1",
        "weft-service-backend-add.1",
        "weft-reset.1",
    ] {
        let text =
            fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        let title = page.trim_end_matches(".1");
        assert!(
            text.contains(&format!(".TH {title} 1")),
            "{page} has no title line"
        );
    }
    let daemon = fs::read_to_string(dir.path().join("weft-daemon.1")).unwrap();
    assert!(daemon.contains("metrics"), "weft-daemon(1) lacks --metrics");
    // Without DIR, weft(1) on standard output.
    let page = weft_out(&["man"]);
    assert!(page.contains(".TH weft 1"), "{page}");
}

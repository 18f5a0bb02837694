//! The command line's own surfaces, read as a user's shell and `man` read them: every
//! subcommand's help shows an example, `bn-exp completions` prints scripts the shells accept,
//! and `bn-exp man` a man page with a section for every subcommand.

use std::process::Command;

use crate::common::{bn_exp, describe, text};

/// The subcommands a user sees in `bn-exp --help`.
const SUBCOMMANDS: [&str; 10] = [
    "train",
    "compare",
    "plot",
    "data",
    "bench",
    "reproduce",
    "run",
    "export",
    "completions",
    "man",
];

#[test]
fn every_subcommand_is_listed_and_its_help_has_an_example() {
    let output = bn_exp().arg("--help").output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&output.stdout);
    for sub in SUBCOMMANDS {
        assert!(help.contains(&format!("  {sub} ")), "{sub} not in:\n{help}");
        let output = bn_exp().args([sub, "--help"]).output().unwrap();
        assert!(output.status.success(), "{sub}: {}", describe(&output));
        let help = text(&output.stdout);
        assert!(
            help.contains("Example") && help.contains("bn-exp "),
            "{sub} --help has no example:\n{help}"
        );
    }
}

#[test]
fn completion_scripts_parse_in_their_shell_and_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = bn_exp().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}: {}", describe(&output));
        let script = text(&output.stdout);
        for sub in ["train", "compare", "reproduce"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    // bash is on every machine CI runs on: the script must parse, and define its function.
    let output = bn_exp().args(["completions", "bash"]).output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bn-exp.bash");
    std::fs::write(&file, &output.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", describe(&check));
    // Sourced, it registers a completion for bn-exp (`complete -p` fails for an unknown name).
    let source_it = format!("source {} && complete -p bn-exp", file.display());
    let sourced = Command::new("bash").args(["-c", &source_it]).output();
    let registered = describe(&sourced.unwrap());
    assert!(registered.contains(" -F _bn__exp bn-exp"), "{registered}");
    let output = bn_exp().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

#[test]
fn the_man_page_is_roff_with_a_section_for_every_subcommand() {
    let output = bn_exp().arg("man").output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let page = text(&output.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH bn-exp 1"),
        "{page}"
    );
    assert!(page.contains(".TH bn-exp 1"), "no title line");
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("bn\\-exp\\-{sub}")),
            "no section for {sub}"
        );
    }
    assert!(
        page.contains("\\-\\-config"),
        "train's --config is not described"
    );
}

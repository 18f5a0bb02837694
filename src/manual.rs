//! What a shell and `man` read about bn-exp, generated from the command line's clap definition
//! so that they never drift from `--help`: `bn-exp completions SHELL` prints a completion
//! script, `bn-exp man` a man page in roff.
//!
//! It is handed the definition (`clap::Command`) rather than importing `cli`, which calls it.

use std::io::Write;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// The completion script for `shell`, on stdout.
pub fn print_completions(command: &mut clap::Command, shell: Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, command, "bn-exp", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script to stdout")
}

/// The man page `bn-exp(1)`, in roff, on stdout; each subcommand is a section of it.
pub fn print_man_page(command: clap::Command) -> Result<()> {
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("bn-exp-{}", sub.get_name());
        let sub_man = clap_mangen::Man::new(sub.clone().display_name(name));
        sub_man.render_name_section(&mut page)?;
        sub_man.render_synopsis_section(&mut page)?;
        sub_man.render_description_section(&mut page)?;
        sub_man.render_options_section(&mut page)?;
    }
    man.render_version_section(&mut page)?;
    std::io::stdout()
        .write_all(&page)
        .context("cannot write the man page to stdout")
}

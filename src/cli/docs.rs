//! `parachute completions <shell>` and `parachute man [--out DIR]`: shell completions and
//! manual pages, generated from the clap definition itself.
//!
//! Generating them from [`super::Cli`] at run time (rather than shipping hand-written copies)
//! means they cannot drift from the binary: a new flag or verb appears in `--help`, the man
//! pages and the completions at once. Packagers run `parachute man --out …` and
//! `parachute completions bash > …` at build time. Man pages are written with
//! [`parachute_fsx::write_atomic`], so a re-run rewrites nothing that did not change.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::exit::Code;

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU Bash (source the output, or install it as `/usr/share/bash-completion/completions/parachute`).
    Bash,
    /// Zsh (install it as `_parachute` in a directory on `$fpath`).
    Zsh,
    /// fish (install it as `~/.config/fish/completions/parachute.fish`).
    Fish,
}

/// Arguments of `parachute completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  parachute completions bash > /usr/share/bash-completion/completions/parachute
  parachute completions zsh > \"${fpath[1]}/_parachute\"
  parachute completions fish > ~/.config/fish/completions/parachute.fish

Exit codes: 0 printed; 1 stdout could not be written.")]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of `parachute man`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Writes parachute.1 and one page per subcommand (parachute-serve.1, parachute-unit-install.1, …) \
into --out; without --out, prints parachute.1 on stdout (`parachute man | man -l -`). Unchanged \
pages are not rewritten.

Exit codes: 0 written; 1 a page could not be written (the path is named).")]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Writes `shell`'s completion script for `parachute` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = super::Cli::command();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "parachute", out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "parachute", out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "parachute", out),
    }
}

/// Every man page: `(file name, roff text)`, the top-level page first, then one page per
/// visible subcommand at any depth (`parachute-unit-install.1`).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut text = Vec::new();
        man.render(&mut text).expect("rendering into memory cannot fail");
        out.push((man.get_filename(), text));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out);
        }
    }
    // Built once at the top so every subcommand gets its display name (`parachute-unit`).
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out);
    out
}

/// Writes every page into `dir`; returns the paths written or already up to date.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!("cannot create the directory {}: {e}. Pass a writable --out DIR.", dir.display())
    })?;
    let mut written = Vec::new();
    for (name, text) in man_pages() {
        let path = dir.join(name);
        parachute_fsx::write_atomic(&path, &text).map_err(|e| format!("{e}"))?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `parachute completions`.
pub fn run_completions(args: CompletionsArgs) -> Code {
    let mut buf = Vec::new();
    write_completions(args.shell, &mut buf);
    let mut out = std::io::stdout().lock();
    match out.write_all(&buf).and_then(|()| out.flush()) {
        Ok(()) => Code::Success,
        Err(e) => {
            eprintln!("parachute completions: cannot write to stdout: {e}.");
            Code::Failure
        }
    }
}

/// Runs `parachute man`.
pub fn run_man(args: ManArgs) -> Code {
    match args.out {
        None => {
            let pages = man_pages();
            let (_, top) = pages.first().expect("the top-level page always exists");
            let mut out = std::io::stdout().lock();
            match out.write_all(top).and_then(|()| out.flush()) {
                Ok(()) => Code::Success,
                Err(e) => {
                    eprintln!("parachute man: cannot write to stdout: {e}.");
                    Code::Failure
                }
            }
        }
        Some(dir) => match write_man_pages(&dir) {
            Ok(paths) => {
                println!("Wrote {} manual page(s) to {}.", paths.len(), dir.display());
                Code::Success
            }
            Err(e) => {
                eprintln!("parachute man: {e}");
                Code::Failure
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand_with_its_full_name() {
        let names: Vec<String> = man_pages().into_iter().map(|(n, _)| n).collect();
        for want in ["parachute.1", "parachute-serve.1", "parachute-unit.1", "parachute-unit-install.1"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "no page for the help subcommand: {names:?}");
    }
}

//! `dmstrack completions` and the hidden `dmstrack manpages`: shell completions and roff man
//! pages generated from the clap definitions, so every command and flag is in them.
//! `scripts/package.sh` runs both on the binary it packages.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap_mangen::roff::{Roff, roman};

use super::{Exit, command};

/// Prints the completion script of `shell` on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "dmstrack", &mut std::io::stdout());
    Exit::Success
}

/// Writes `dmstrack.1` and `dmstrack-<command>.1` for every visible command into `dir`.
pub(super) fn manpages(dir: &Path) -> Exit {
    match write_manpages(dir) {
        Ok(mut written) => {
            written.sort();
            for path in written {
                println!("{}", path.display());
            }
            Exit::Success
        }
        Err(err) => {
            eprintln!("dmstrack manpages: {}: {err}", dir.display());
            Exit::Failure
        }
    }
}

fn write_manpages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut root = command().disable_help_subcommand(true);
    // Propagates the global flags into every command and names them `dmstrack-<command>`.
    root.build();
    let mut pages = vec![root.clone()];
    pages.extend(root.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut written = Vec::new();
    for cmd in pages {
        let man = clap_mangen::Man::new(cmd.clone())
            .source(format!("dmstrack {}", env!("CARGO_PKG_VERSION")))
            .manual("dmstrack manual");
        let path = dir.join(man.get_filename());
        let mut file = std::fs::File::create(&path)?;
        render_page(&man, &cmd, &mut file)?;
        file.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// clap_mangen's sections, with the closing `--help` text (examples, exit codes,
/// environment) as proper sections instead of one reflowed "EXTRA" paragraph.
fn render_page(
    man: &clap_mangen::Man,
    cmd: &clap::Command,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    if let Some(after) = cmd.get_after_help() {
        after_help_sections(&after.to_string()).to_writer(out)?;
    }
    let mut see_also = Roff::default();
    see_also.control("SH", ["SEE ALSO"]);
    let related = if cmd.get_name() == "dmstrack" {
        "systemd.exec(5), /usr/share/doc/dmstrack/".to_owned()
    } else {
        "dmstrack(1), /usr/share/doc/dmstrack/".to_owned()
    };
    see_also.text([roman(related)]);
    see_also.to_writer(out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// Paragraphs of the closing help text: one that starts with a `Heading:` line becomes a
/// section `HEADING` with its lines kept as they are; any other is a plain paragraph.
fn after_help_sections(text: &str) -> Roff {
    let mut roff = Roff::default();
    for paragraph in text.split("\n\n") {
        let mut lines = paragraph.lines();
        let Some(first) = lines.next() else {
            continue;
        };
        match first
            .strip_suffix(':')
            .filter(|h| !h.contains(' ') || h.len() < 16)
        {
            Some(heading) => {
                let heading = match heading {
                    "Exit codes" => "EXIT STATUS".to_owned(),
                    "Example" => "EXAMPLES".to_owned(),
                    other => other.to_uppercase(),
                };
                roff.control("SH", [heading.as_str()]);
                roff.control("nf", []);
                for line in lines {
                    roff.text([roman(line)]);
                }
                roff.control("fi", []);
            }
            None => {
                roff.control("PP", []);
                roff.text([roman(paragraph.replace('\n', " "))]);
            }
        }
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(manpages(dir.path()), Exit::Success);
        let root = std::fs::read_to_string(dir.path().join("dmstrack.1")).unwrap();
        assert!(root.contains(".TH dmstrack 1"), "{root}");
        for sub in command().get_subcommands().filter(|s| !s.is_hide_set()) {
            let page = dir.path().join(format!("dmstrack-{}.1", sub.get_name()));
            assert!(page.exists(), "{} missing", page.display());
        }
        assert!(!dir.path().join("dmstrack-manpages.1").exists());
        // The closing help text becomes sections, its lines kept.
        assert!(root.contains(".SH \"EXIT STATUS\""), "{root}");
        assert!(root.contains(".SH ENVIRONMENT"), "{root}");
        let status = std::fs::read_to_string(dir.path().join("dmstrack-status.1")).unwrap();
        assert!(status.contains(".SH EXAMPLES\n.nf\n"), "{status}");
        // Global flags are listed on every command's page.
        assert!(status.contains("\\-\\-config"), "{status}");
    }
}

//! Where a report comes from in git: the commit the reproduction ran at, and the commit that
//! registered each claim, so that a reader can check that a claim was written before the runs
//! that judge it.

use std::path::Path;

/// The oldest commit whose change to `claims_file` added the text `"id": "<id>"`: where the
/// claim was registered, as "<short hash> <date>". "unknown" when git or the history cannot
/// tell (a copy, not a clone).
pub fn registering_commit(claims_file: &Path, id: &str) -> String {
    let dir = claims_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = claims_file.file_name().and_then(|n| n.to_str()) else {
        return "unknown".to_string();
    };
    let pickaxe = format!("-S\"id\": \"{id}\"");
    let args = ["log", "--reverse", "--format=%h %cs", &pickaxe, "--", name];
    git_first_line(dir, &args).unwrap_or_else(|| "unknown".to_string())
}

/// The commit the working directory is at.
pub fn git_commit() -> String {
    git_first_line(Path::new("."), &["rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown (not a git checkout)".to_string())
}

/// The first line of `git -C dir ARGS`, if git ran, succeeded and printed one.
fn git_first_line(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

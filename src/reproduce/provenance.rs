//! Where a report comes from in git: the commit the reproduction ran at, and the commit that
//! registered each claim, so that a reader can check that a claim was written before the runs
//! that judge it.

use std::path::Path;

/// The oldest commit whose change to `claims_file` added the text `"id": "<id>"`: where the
/// claim was registered. "unknown" when git or the history cannot tell (a copy, not a clone).
pub fn registering_commit(claims_file: &Path, id: &str) -> String {
    let (dir, name) = match (claims_file.parent(), claims_file.file_name()) {
        (Some(dir), Some(name)) => (
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            },
            name,
        ),
        _ => return "unknown".to_string(),
    };
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "--reverse", "--format=%h %cs"])
        .arg(format!("-S\"id\": \"{id}\""))
        .arg("--")
        .arg(name)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines().next().map(|l| l.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown (not a git checkout)".to_string())
}

//! Replacing a file of the run folder whole: through a temporary file beside it and a rename, so
//! a reader (a resume, `compare`, another array task reading a plan, TensorBoard) or a crash
//! never sees half a file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Write JSON to `path` atomically (a temporary file beside it, then rename), pretty-printed, so a
/// reader or a crash never sees half a file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text_atomic(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

/// Write `text` to `path` through a temporary file beside it and a rename, so that a reader
/// (a resume, another array task reading a plan) never sees half a file.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    write_bytes_atomic(path, text.as_bytes())
}

/// Write `bytes` to `path` through a temporary file beside it and a rename (see
/// [`write_text_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Temporary files are created owner-only; results are for everyone who can read the folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

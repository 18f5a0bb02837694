//! The run lock: one bn-exp process writes a run folder at a time ([`RunLock`]), with a
//! heartbeat that `--steal-after` reads to take over a lock whose holder is gone for good.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};

use super::files::{LOCK_FILE, STEAL_GUARD_FILE};

/// How often a lock's holder touches `run.lock`: its heartbeat, which `--steal-after` reads.
pub const LOCK_HEARTBEAT: Duration = Duration::from_secs(5);

/// The shortest `--steal-after`: six missed heartbeats, so that a busy machine's late beat is
/// never taken for a dead holder.
pub const MIN_STEAL_AFTER: Duration = Duration::from_secs(30);

/// An exclusive claim on a run folder for as long as it lives: two processes never write one
/// run.
///
/// It is an advisory lock (`flock`) on `run.lock`, which the kernel releases when its holder
/// exits, however it exits: a killed holder's lock is free at once, with no guessing from
/// process ids. The file also names the holder (host and pid) for the message a refused
/// process prints, and is emptied on a clean release; a non-empty file whose lock is free
/// therefore means the previous holder was killed, which [`RunLock::took_over`] reports.
///
/// A lock can outlive its holder where the kernel cannot see the holder die: a node that
/// crashed while holding a lock on a shared filesystem, a lock server that has not yet
/// expired the dead client. For those, the holder beats: a thread touches the file's mtime
/// every [`LOCK_HEARTBEAT`]. [`RunLock::acquire`] with `steal_after` takes a lock whose
/// heartbeat has been silent that long, by replacing the file (the old holder's lock stays on
/// the unlinked one). It never steals from a process it can see alive on its own host (a
/// stopped process does not beat either). A holder that wakes up to find its file replaced
/// stops before its next write: [`RunLock::ensure_held`].
#[derive(Debug)]
pub struct RunLock {
    shared: Arc<HeldLock>,
    /// Dropping it stops the heartbeat thread.
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// Set when the previous holder was killed while holding the run (or, with
    /// `steal_after`, went silent): who it was.
    pub took_over: Option<String>,
}

/// Why a process stopped writing to a run: another process took its lock over.
#[derive(Debug)]
pub struct TakenOver {
    dir: PathBuf,
    by: String,
}

impl std::fmt::Display for TakenOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was taken over by {} (--steal-after) while this process was silent; stopping \
             without writing to it again",
            self.dir.display(),
            self.by
        )
    }
}

impl std::error::Error for TakenOver {}

/// The open, locked `run.lock`, shared with the heartbeat thread.
#[derive(Debug)]
struct HeldLock {
    file: File,
    path: PathBuf,
    /// Set by the heartbeat once `path` is no longer this file: the run was taken over.
    lost: AtomicBool,
}

impl HeldLock {
    /// Whether `path` still names the file this process locked (itself, not a link to it).
    fn still_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (fs::symlink_metadata(&self.path), self.file.metadata()) {
            (Ok(now), Ok(ours)) => now.dev() == ours.dev() && now.ino() == ours.ino(),
            _ => false,
        }
    }
}

impl RunLock {
    /// Take the lock of `dir` (which must exist), or say who holds it. With `steal_after`, a
    /// lock whose holder's heartbeat has been silent at least that long is taken over.
    pub fn acquire(dir: &Path, steal_after: Option<Duration>) -> Result<RunLock> {
        if let Some(limit) = steal_after {
            ensure!(
                limit >= MIN_STEAL_AFTER,
                "--steal-after must be at least {} s (the holder beats every {} s)",
                MIN_STEAL_AFTER.as_secs(),
                LOCK_HEARTBEAT.as_secs()
            );
        }
        let path = dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        let (file, took_over) = match try_lock(&file, &path)? {
            true => {
                let took_over = killed_holder(&file);
                (file, took_over)
            }
            false => match steal_after {
                None => return Err(refusal(dir, &file, None)),
                Some(limit) => steal(dir, &path, limit)?,
            },
        };
        let me = format!("{} {}\n", host_name(), std::process::id());
        (|| {
            use std::io::Seek;
            file.set_len(0)?;
            (&file).rewind()?;
            (&file).write_all(me.as_bytes())?;
            file.sync_all()
        })()
        .with_context(|| format!("cannot write {}", path.display()))?;
        let shared = Arc::new(HeldLock {
            file,
            path,
            lost: AtomicBool::new(false),
        });
        let (stop, stopped) = mpsc::channel();
        let beating = Arc::clone(&shared);
        let heartbeat = std::thread::Builder::new()
            .name("run.lock heartbeat".into())
            .spawn(move || beat_until_stopped(&beating, &stopped))
            .context("cannot start the run lock's heartbeat thread")?;
        Ok(RunLock {
            shared,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
            took_over,
        })
    }

    /// A [`TakenOver`] error if the run was taken over (`--steal-after` in another process)
    /// since this process locked it: the caller must stop without writing to the folder again.
    pub fn ensure_held(&self) -> Result<()> {
        let held = &self.shared;
        if !held.lost.load(Ordering::Relaxed) && held.still_ours() {
            return Ok(());
        }
        held.lost.store(true, Ordering::Relaxed);
        let now = read_holder_at(&held.path);
        Err(TakenOver {
            dir: held.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            by: describe_holder(now.trim()),
        }
        .into())
    }

    /// Whether the heartbeat has seen the run taken over (cheap: no system call). A `false`
    /// can be up to one heartbeat late; [`RunLock::ensure_held`] looks at the file itself.
    pub fn taken_over(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Give the lock up and remove its file: for a folder that is about to be removed.
    pub fn release_and_remove(self) {
        if self.shared.still_ours() {
            let _ = fs::remove_file(&self.shared.path);
        }
    }
}

impl Drop for RunLock {
    /// Stop the heartbeat, empty the file (a clean end) and let the lock go. The file stays:
    /// removing it could let two later processes lock two different files of the same name.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        let held = &self.shared;
        if held.still_ours() {
            let _ = held.file.set_len(0);
        }
        let _ = held.file.unlock();
    }
}

/// The heartbeat thread: touch the file every [`LOCK_HEARTBEAT`] until told to stop, and
/// note when the path no longer names it.
fn beat_until_stopped(held: &HeldLock, stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LOCK_HEARTBEAT) {
        if !held.still_ours() {
            held.lost.store(true, Ordering::Relaxed);
            return;
        }
        let _ = held.file.set_modified(SystemTime::now());
    }
}

/// Open a lock file of the run folder (`run.lock`, `run.lock.steal`), creating it if needed:
/// only a regular file of the folder's own, never through a symbolic link. A link would have
/// bn-exp lock, write its name into and, on release, empty the file it points to (a dangling
/// one would create its target), and a hard link is a file outside the run by another name;
/// both, and anything that is not a regular file, are refused by path.
fn open_lock_file(path: &Path) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refused = |what: &str| {
        anyhow!(
            "{} is {what}, not a regular file of the run folder: bn-exp locks, writes and empties \
             that file, so it would change whatever the name leads to. Remove it (rm {}) and \
             run bn-exp again",
            path.display(),
            path.display()
        )
    };
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        // A symbolic link in the last component, dangling or not, fails with ELOOP instead of
        // being followed (and its target created).
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused("a symbolic link"));
        }
        Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
    };
    // What was opened, not what the path names now: no window between a check and the open.
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(refused("not a regular file (a FIFO, a socket or a device)"));
    }
    if meta.nlink() > 1 {
        return Err(refused(&format!(
            "a file with {} names (a hard link)",
            meta.nlink()
        )));
    }
    Ok(file)
}

/// The holder line of the lock file at `path`, read without following a link; empty when
/// there is none to read.
fn read_holder_at(path: &Path) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()
        .filter(|file| file.metadata().is_ok_and(|m| m.is_file()))
        .map(|file| read_holder(&file))
        .unwrap_or_default()
}

/// `flock` without waiting: `Ok(false)` when another process holds it.
fn try_lock(file: &File, path: &Path) -> Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The holder line in a lock file ("host pid"), trimmed; empty after a clean release.
fn read_holder(mut file: &File) -> String {
    use std::io::{Read, Seek};
    let mut holder = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut holder));
    holder.trim().to_string()
}

/// Who held a lock this process has just taken, if anyone: a name left in the file means its
/// holder was killed (a clean release empties it).
fn killed_holder(file: &File) -> Option<String> {
    let previous = read_holder(file);
    (!previous.is_empty()).then(|| format!("{}, which was killed", describe_holder(&previous)))
}

/// How long ago the holder of the open lock file last beat.
fn silent_for(file: &File) -> Duration {
    file.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// The error a refused process prints: who holds the run and when it last beat.
fn refusal(dir: &Path, file: &File, why: Option<String>) -> anyhow::Error {
    // A holder that has just locked writes its name a moment later: wait for it, briefly.
    let mut holder = read_holder(file);
    for _ in 0..50 {
        if !holder.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        holder = read_holder(file);
    }
    let holder = match holder.is_empty() {
        true => "a process that is just starting".to_string(),
        false => describe_holder(&holder),
    };
    let silent = silent_for(file).as_secs();
    let why = why.unwrap_or_else(|| {
        "wait for it to end, or, if that process is gone for good (a crashed node), pass \
         --steal-after SECS to take over a lock silent that long"
            .to_string()
    });
    anyhow!(
        "{} is in use by another bn-exp process ({holder}, last heartbeat {silent} s ago); {why}",
        dir.display()
    )
}

/// Take over a lock another process holds, if its heartbeat has been silent for `limit` and
/// its holder is not a live process on this host. Stealers queue on `run.lock.steal`, so two
/// of them never both take the run; a process that locks the new file first wins.
fn steal(dir: &Path, path: &Path, limit: Duration) -> Result<(File, Option<String>)> {
    let guard_path = dir.join(STEAL_GUARD_FILE);
    let guard = open_lock_file(&guard_path)?;
    guard
        .lock()
        .with_context(|| format!("cannot lock {}", guard_path.display()))?;
    // Another stealer may have replaced the file while this one waited: look again.
    let file = open_lock_file(path)?;
    if try_lock(&file, path)? {
        let took_over = killed_holder(&file);
        return Ok((file, took_over));
    }
    let silent = silent_for(&file);
    if silent < limit {
        return Err(refusal(
            dir,
            &file,
            Some(format!(
                "it is not stale (--steal-after {} s); wait for it to end",
                limit.as_secs()
            )),
        ));
    }
    let holder = read_holder(&file);
    if holder_is_alive_here(&holder) {
        return Err(refusal(
            dir,
            &file,
            Some(
                "that process is alive on this host (perhaps stopped), so it is not taken over; \
                 end it first"
                    .to_string(),
            ),
        ));
    }
    fs::remove_file(path).with_context(|| format!("cannot remove the stale {}", path.display()))?;
    let fresh = open_lock_file(path)?;
    if !try_lock(&fresh, path)? {
        anyhow::bail!(
            "{} was taken by another bn-exp process while this one was taking over its stale lock",
            dir.display()
        );
    }
    let took_over = format!(
        "{}, whose heartbeat had been silent for {} s",
        describe_holder(&holder),
        silent.as_secs()
    );
    Ok((fresh, Some(took_over)))
}

/// Whether a lock's holder ("host pid") is a process that exists on this host.
fn holder_is_alive_here(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|p| p.parse::<u32>().ok()),
    ) {
        (Some(host), Some(pid)) => {
            host == host_name() && Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// This machine's name, as the lock records it.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown-host".to_string())
}

fn describe_holder(holder: &str) -> String {
    let mut parts = holder.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(host), Some(pid)) => format!("process {pid} on {host}"),
        _ => format!("lock content {holder:?}"),
    }
}

//! The run lock's heartbeat and `--steal-after`, through the real binary: a lock whose holder
//! went silent (a crashed node, simulated by another process holding the `flock` and a foreign
//! host in the file) is taken over only when asked, never from a live process on this host,
//! and a holder that wakes up to find its run taken over stops without writing to it again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use sha2::Digest;

use crate::common::{self, bn_exp, embedded_data, metrics_without_timing, repo, stderr};

/// A smoke run long enough to be stopped mid-way (20,000 steps, a few seconds).
const LONG: [&str; 6] = [
    "--set",
    "steps=20000",
    "--set",
    "eval_every=1000",
    "--set",
    "checkpoint_every=1000",
];

/// [`common::smoke_train`] into `out` with `extra` flags.
fn smoke_train(out: &Path, extra: &[&str]) -> Command {
    let mut command = common::smoke_train(out);
    command.args(extra);
    command
}

fn output(mut command: Command) -> Output {
    command.output().expect("bn-exp runs")
}

/// What a test's run must end as: the smoke run with `extra`, trained uninterrupted into
/// `<dir>/straight`.
fn straight_run(dir: &Path, extra: &[&str]) -> PathBuf {
    let straight = dir.join("straight");
    assert!(output(smoke_train(&straight, extra)).status.success());
    straight
}

/// `o` was refused (exit 2) with a message on stderr that says `says`.
fn assert_refused(o: &Output, says: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    assert!(stderr(o).contains(says), "{}", stderr(o));
}

/// Make the lock file look as if its holder last beat `ago` before now.
fn age_lock(run: &Path, ago: Duration) {
    let file = fs::File::options()
        .write(true)
        .open(run.join("run.lock"))
        .unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

fn lock_age(run: &Path) -> Duration {
    let modified = fs::metadata(run.join("run.lock"))
        .unwrap()
        .modified()
        .unwrap();
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
}

/// Hold `run.lock`'s flock from this test process, as a dead node's lock lingers on a shared
/// filesystem, with the file naming a holder on another host. Dropping the file lets go.
fn foreign_holder(run: &Path) -> fs::File {
    let lock = fs::File::options()
        .read(true)
        .write(true)
        .open(run.join("run.lock"))
        .unwrap();
    lock.try_lock().expect("the run is free");
    fs::write(run.join("run.lock"), "node-17.cluster 4242\n").unwrap();
    lock
}

/// A child process killed (and continued, if stopped) when the test ends, passed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

/// The records and summary numbers a run must end with, wherever it was trained.
fn outcome(run: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let numbers = serde_json::json!([summary["final_test_acc"], summary["status"]]);
    (metrics_without_timing(run), numbers)
}

#[test]
fn a_silent_foreign_lock_is_taken_over_only_with_steal_after() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path(), &[]);
    let run = dir.path().join("run");
    let first = output(smoke_train(&run, &["--stop-after", "100"]));
    assert!(first.status.success(), "{}", stderr(&first));
    let holder = foreign_holder(&run);
    let started = std::time::Instant::now();
    age_lock(&run, Duration::from_secs(1000));
    // The age a message reports: the 1000 s set above plus the seconds this test has run.
    let reported_age_is_right = |text: &str, prefix: &str| {
        let after = text
            .split(prefix)
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"));
        let secs: u64 = after
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        let elapsed = started.elapsed().as_secs();
        (1000..=1001 + elapsed).contains(&secs)
    };

    let refused = output(smoke_train(&run, &["--resume"]));
    assert_eq!(refused.status.code(), Some(2));
    let message = stderr(&refused);
    assert!(
        message.contains("process 4242 on node-17.cluster")
            && reported_age_is_right(&message, "last heartbeat ")
            && message.contains("--steal-after SECS"),
        "{message}"
    );
    let too_short = output(smoke_train(&run, &["--resume", "--steal-after", "10"]));
    assert_refused(&too_short, "at least 30 s");
    let not_stale = output(smoke_train(&run, &["--resume", "--steal-after", "3600"]));
    assert_refused(&not_stale, "not stale");
    assert!(
        !run.join("summary.json").exists(),
        "a refused process trained"
    );

    let stolen = output(smoke_train(&run, &["--resume", "--steal-after", "60"]));
    drop(holder);
    assert!(stolen.status.success(), "{}", stderr(&stolen));
    let note = stderr(&stolen);
    assert!(
        note.contains("process 4242 on node-17.cluster, whose heartbeat had been silent for ")
            && reported_age_is_right(&note, "silent for "),
        "{note}"
    );
    assert_eq!(outcome(&run), outcome(&straight));
    assert_eq!(fs::read_to_string(run.join("run.lock")).unwrap(), "");
}

#[test]
fn a_stopped_holder_on_this_host_is_never_taken_over_and_its_heartbeat_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut holder = Reaped(
        smoke_train(&run, &["--hold-after", "150"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = std::io::BufRead::lines(std::io::BufReader::new(holder.0.stderr.take().unwrap()));
    assert!(
        lines
            .map(|l| l.unwrap())
            .any(|l| l.contains("holding at step 150")),
        "the holder never held"
    );
    // Stopped (as `scontrol suspend` stops a job), the holder does not beat.
    signal(&holder.0, "STOP");
    age_lock(&run, Duration::from_secs(120));
    let refused = output(smoke_train(&run, &["--resume", "--steal-after", "60"]));
    assert_refused(&refused, "alive on this host");
    // Continued, it beats again within one heartbeat (5 s).
    signal(&holder.0, "CONT");
    let woke = std::time::Instant::now();
    while lock_age(&run) > Duration::from_secs(60) {
        assert!(
            woke.elapsed() < Duration::from_secs(20),
            "no heartbeat after SIGCONT"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_holder_whose_run_was_taken_over_stops_without_writing_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path(), &LONG);
    let run = dir.path().join("run");
    let mut first = Reaped(
        smoke_train(&run, &LONG)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Let it reach its second checkpoint, then freeze it, as a node that stops answering.
    let waited = std::time::Instant::now();
    while metrics_lines(&run) < 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the run never evaluated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&first.0, "STOP");
    let finished = take_over_and_finish(&run, first.0.id(), &straight);

    signal(&first.0, "CONT");
    let ended = wait_with_stderr(&mut first.0);
    assert_eq!(ended.status.code(), Some(2), "{}", stderr(&ended));
    assert!(
        stderr(&ended).contains("was taken over by") && stderr(&ended).contains("without writing"),
        "{}",
        stderr(&ended)
    );
    assert_eq!(
        snapshot(&run),
        finished,
        "the old holder wrote after losing the run"
    );
    assert_eq!(outcome(&run), outcome(&straight));
}

fn metrics_lines(run: &Path) -> usize {
    fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// Every file of a run folder (checkpoint included) with the SHA-256 of its bytes.
fn snapshot(run: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut pending = vec![run.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(run).unwrap().display().to_string();
                let digest = sha2::Sha256::digest(fs::read(&path).unwrap());
                let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
                files.push((name, hex));
            }
        }
    }
    files.sort();
    files
}

/// Wait for a child whose stderr is piped; its status and stderr.
fn wait_with_stderr(child: &mut Child) -> Output {
    let mut err = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: err,
    }
}

/// Two `bn-exp run` tasks started at once on one plan entry (a task requeued while its first
/// attempt still runs): one trains, the other refuses and names it, and the run ends as the
/// same config trained alone.
#[test]
fn two_tasks_on_one_plan_entry_at_once_train_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let smoke = repo().join("configs/smoke.json");
    let study = dir.path().join("twice.json");
    let spec = serde_json::json!({
        "study": "twice", "description": "one long smoke run", "base": smoke,
        "set": {"steps": 20000, "eval_every": 1000, "checkpoint_every": 1000},
        "grid": {"seed": [0]}
    });
    fs::write(&study, spec.to_string()).unwrap();
    let results = dir.path().join("results");
    common::plan_study(&study, &results);
    let plan = results.join("twice/plan.jsonl");
    let task = || {
        let mut command = bn_exp();
        command
            .args(["run", "--quiet", "--index", "0", "--plan"])
            .arg(&plan)
            .arg("--data-dir")
            .arg(embedded_data())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Reaped(command.spawn().unwrap())
    };
    let (mut a, mut b) = (task(), task());
    let ends = [wait_with_stderr(&mut a.0), wait_with_stderr(&mut b.0)];
    let codes: Vec<Option<i32>> = ends.iter().map(|o| o.status.code()).collect();
    assert!(
        codes == [Some(0), Some(2)] || codes == [Some(2), Some(0)],
        "{codes:?}: {} / {}",
        stderr(&ends[0]),
        stderr(&ends[1])
    );
    let (winner, loser) = if codes[0] == Some(0) {
        (a.0.id(), &ends[1])
    } else {
        (b.0.id(), &ends[0])
    };
    assert!(
        stderr(loser).contains("is in use by another bn-exp process")
            && stderr(loser).contains(&format!("process {winner} on ")),
        "{}",
        stderr(loser)
    );
    let straight = straight_run(dir.path(), &LONG);
    let run = fs::read_dir(results.join("twice"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("summary.json").is_file())
        .expect("the run finished");
    assert_eq!(outcome(&run), outcome(&straight));
}

/// A holder frozen in the middle of saving a checkpoint (written, not yet put in place) while
/// another process takes the run over and finishes it: woken, it checks its lock before the
/// renames and exits, so the finished run's checkpoint is not replaced by its stale one.
#[test]
fn a_holder_frozen_mid_checkpoint_does_not_put_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let straight = straight_run(dir.path(), &LONG);
    let run = dir.path().join("run");
    let frozen = [&LONG[..], &["--stop-in-checkpoint", "2000"]].concat();
    let mut first = Reaped(
        smoke_train(&run, &frozen)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = std::io::BufReader::new(first.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(
        line.contains("stopping in the checkpoint of step 2000"),
        "{line}"
    );
    wait_until_stopped(&first.0);
    // Frozen with its checkpoint staged in a folder of its own.
    let staged = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|name| name.starts_with("checkpoint.tmp."))
        .collect::<Vec<_>>();
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(run.join(&staged[0]).join("state.json").is_file());
    let finished = take_over_and_finish(&run, first.0.id(), &straight);

    signal(&first.0, "CONT");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = first.0.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{rest}");
    assert!(
        rest.contains("was taken over by") && rest.contains("without writing"),
        "{rest}"
    );
    // It removed what it had staged, and nothing else: the finished run without that folder.
    let without_staged: Vec<(String, String)> = finished
        .into_iter()
        .filter(|(name, _)| !name.starts_with(&format!("{}/", staged[0])))
        .collect();
    assert_eq!(
        snapshot(&run),
        without_staged,
        "the frozen holder changed the folder"
    );
}

/// Make the lock of `run`, held by the frozen process `pid`, look like a crashed node's (silent,
/// naming another host), take the run over with `--steal-after` and finish it; the run must end
/// as `straight`. Returns the finished folder's snapshot.
fn take_over_and_finish(run: &Path, pid: u32, straight: &Path) -> Vec<(String, String)> {
    fs::write(run.join("run.lock"), format!("node-17.cluster {pid}\n")).unwrap();
    age_lock(run, Duration::from_secs(120));
    let resume = [&LONG[..], &["--resume", "--steal-after", "60"]].concat();
    let second = output(smoke_train(run, &resume));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(outcome(run), outcome(straight));
    snapshot(run)
}

/// Wait until a child is in the stopped state (it stopped itself).
fn wait_until_stopped(child: &Child) {
    let stat = format!("/proc/{}/stat", child.id());
    let waited = std::time::Instant::now();
    loop {
        let text = fs::read_to_string(&stat).unwrap_or_default();
        // The state follows the parenthesised command name.
        if text.rsplit(") ").next().is_some_and(|s| s.starts_with('T')) {
            return;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the child never stopped: {text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `run.lock` is only ever a regular file of the run folder: a symbolic link (to a file
/// elsewhere, or dangling), a hard link or a FIFO in its place is refused by path, and what it
/// leads to is left as it was; a link was followed before, its target overwritten with the
/// holder's name and emptied on release (a dangling one created its target).
#[test]
fn a_run_lock_that_is_not_a_regular_file_of_the_run_is_refused_and_left_alone() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("precious.txt");
    let nowhere = dir.path().join("nowhere.txt");
    type Make = fn(&Path, &Path, &Path);
    let cases: [(&str, Make, &str); 4] = [
        (
            "a link to a file outside the run",
            |lock, outside, _| symlink(outside, lock).unwrap(),
            "is a symbolic link",
        ),
        (
            "a dangling link",
            |lock, _, nowhere| symlink(nowhere, lock).unwrap(),
            "is a symbolic link",
        ),
        (
            "a hard link to a file outside the run",
            |lock, outside, _| fs::hard_link(outside, lock).unwrap(),
            "(a hard link)",
        ),
        (
            "a FIFO",
            |lock, _, _| {
                let made = Command::new("mkfifo").arg(lock).status().unwrap();
                assert!(made.success(), "mkfifo failed");
            },
            "not a regular file",
        ),
    ];
    for (i, (what, make, says)) in cases.into_iter().enumerate() {
        fs::write(&outside, "my notes\n").unwrap();
        let run = dir.path().join(format!("run-{i}"));
        fs::create_dir(&run).unwrap();
        let lock = run.join("run.lock");
        make(&lock, &outside, &nowhere);
        let o = output(smoke_train(&run, &["--stop-after", "10"]));
        assert_refused(&o, says);
        assert!(
            stderr(&o).contains(&lock.display().to_string()),
            "{what}: {}",
            stderr(&o)
        );
        assert_eq!(
            fs::read_to_string(&outside).unwrap(),
            "my notes\n",
            "{what}"
        );
        assert!(!nowhere.exists(), "{what}: the link's target was created");
        assert_eq!(
            common::list_dir(&run),
            ["run.lock"],
            "{what}: the refused run wrote into its folder"
        );
    }

    // The file stealers queue on is held to the same rule.
    let run = dir.path().join("stolen");
    let first = output(smoke_train(&run, &["--stop-after", "100"]));
    assert!(first.status.success(), "{}", stderr(&first));
    let holder = foreign_holder(&run);
    age_lock(&run, Duration::from_secs(1000));
    fs::write(&outside, "my notes\n").unwrap();
    let guard = run.join("run.lock.steal");
    symlink(&outside, &guard).unwrap();
    let o = output(smoke_train(&run, &["--resume", "--steal-after", "60"]));
    drop(holder);
    assert_refused(&o, "is a symbolic link");
    assert!(
        stderr(&o).contains(&guard.display().to_string()),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(&outside).unwrap(), "my notes\n");
    assert!(!run.join("summary.json").exists());
}

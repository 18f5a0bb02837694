//! What `bn-exp run --plan` trains, whatever the plan file says: a line is trained only in its
//! own run folder, directly inside the study folder the plan was written for, with a config
//! naming that run and that study; any other line is refused with the plan and the line named,
//! and nothing is written anywhere. And a plan written for a relative `--results-dir` names
//! absolute run folders, so a task started from another folder (a pod, an `sbatch` elsewhere)
//! trains where `compare --study` collects.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::common::{self, bn_exp, describe, embedded_data, list_dir, list_tree, repo, text};

/// A study of `seeds` short smoke runs, `guarded`, in `dir`.
fn study(dir: &Path, seeds: &[u64]) -> PathBuf {
    let path = dir.join("guarded.json");
    let spec = json!({
        "study": "guarded", "description": "short smoke runs",
        "base": repo().join("configs/smoke.json"),
        "set": {"steps": 20, "eval_every": 10, "checkpoint_every": 10},
        "grid": {"seed": seeds}
    });
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// `bn-exp run --plan PLAN --index INDEX` from `cwd`, on the embedded MNIST.
fn task(plan: &Path, index: usize, cwd: &Path) -> Output {
    std::fs::create_dir_all(cwd).unwrap();
    bn_exp()
        .args(["run", "--quiet", "--plan"])
        .arg(plan)
        .args(["--index", &index.to_string(), "--data-dir"])
        .arg(embedded_data())
        .current_dir(cwd)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("BN_EXP_DATA_DIR")
        .env_remove(bn_exp::data::CATALOGUE_ENV)
        .output()
        .unwrap()
}

fn lines(plan: &Path) -> Vec<Value> {
    std::fs::read_to_string(plan)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_lines(plan: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    std::fs::write(plan, text).unwrap();
}

#[test]
fn a_plan_line_that_points_anywhere_but_its_own_run_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let study = study(&root, &[0, 1]);
    let results = root.join("results");
    common::plan_study(&study, &results);
    let study_dir = results.join("guarded");
    let plan = study_dir.join("plan.jsonl");
    let good = lines(&plan);
    assert_eq!(good[0]["run_dir"], json!(study_dir.join("seed-0")));
    let before = list_tree(&root);

    let run_dir =
        |line: usize, to: Value| move |lines: &mut Vec<Value>| lines[line]["run_dir"] = to.clone();
    let path = |p: PathBuf| json!(p);
    type Tamper = Box<dyn Fn(&mut Vec<Value>)>;
    // Line 1's run folder pointed elsewhere, then the other ways to tamper with a line.
    let line_1_run_dirs: Vec<(&str, Value)> = vec![
        ("../ escapes", json!("../escaped")),
        ("relative", json!("seed-0")),
        ("relative to the results", json!("results/guarded/seed-0")),
        ("the task's own folder", json!("")),
        ("the study folder", path(study_dir.clone())),
        ("elsewhere", path(root.join("elsewhere/seed-0"))),
        ("the results folder", path(results.join("seed-0"))),
        ("out by ..", path(study_dir.join("../escaped"))),
        ("back by ..", path(study_dir.join("seed-0/.."))),
        ("inside", path(study_dir.join("seed-0/deeper"))),
        ("another run's", path(study_dir.join("seed-1"))),
    ];
    let mut tampers: Vec<(&str, usize, Tamper)> = line_1_run_dirs
        .into_iter()
        .map(|(what, to)| (what, 1, Box::new(run_dir(0, to)) as Tamper))
        .collect();
    tampers.extend::<[(&str, usize, Tamper); 6]>([
        (
            "line 2 elsewhere",
            2,
            Box::new(run_dir(1, path(root.join("elsewhere")))),
        ),
        (
            "names another run",
            1,
            Box::new(|l: &mut Vec<Value>| l[0]["config"]["name"] = json!("seed-1")),
        ),
        (
            "names another study",
            1,
            Box::new(|l: &mut Vec<Value>| l[0]["config"]["study"] = json!("other")),
        ),
        (
            "names no study",
            1,
            Box::new(|l: &mut Vec<Value>| {
                l[0]["config"].as_object_mut().unwrap().remove("study");
            }),
        ),
        (
            "a name with ..",
            1,
            Box::new(|l: &mut Vec<Value>| l[0]["name"] = json!("../seed-0")),
        ),
        (
            "line 2 is line 1 again",
            2,
            Box::new(|l: &mut Vec<Value>| {
                let mut again = l[0].clone();
                again["index"] = json!(1);
                l[1] = again;
            }),
        ),
    ]);
    for (what, line, tamper) in &tampers {
        let mut lines = good.clone();
        tamper(&mut lines);
        write_lines(&plan, &lines);
        let cwd = root.join("task");
        let output = task(&plan, 0, &cwd);
        let shown = format!("{what}: {}", describe(&output));
        assert_eq!(output.status.code(), Some(2), "{shown}");
        let wanted = format!("{} line {line} is refused", plan.display());
        assert!(text(&output.stderr).contains(&wanted), "{shown}");
        // Nothing trained anywhere: the tree is as it was, but for the plan and the empty
        // working folder.
        assert!(list_dir(&cwd).is_empty(), "{shown}");
        std::fs::remove_dir(&cwd).unwrap();
        assert_eq!(list_tree(&root), before, "{shown}");
    }

    // The plan as written trains entry 0 where compare collects it.
    write_lines(&plan, &good);
    let output = task(&plan, 0, &root.join("task"));
    assert!(output.status.success(), "{}", describe(&output));
    assert!(study_dir.join("seed-0/summary.json").is_file());
}

#[test]
fn a_plan_for_a_relative_results_folder_trains_where_compare_collects() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let study = study(&root, &[0]);
    let here = root.join("here");
    std::fs::create_dir(&here).unwrap();
    for emit in ["slurm", "k8s"] {
        let output = bn_exp()
            .args(["compare", "--study"])
            .arg(&study)
            .args([
                "--results-dir",
                "rel",
                "--plan",
                "--emit",
                emit,
                "--data-dir",
            ])
            .arg(embedded_data())
            .current_dir(&here)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
    }
    let study_dir = here.join("rel/guarded");
    let plan = study_dir.join("plan.jsonl");
    let lines = lines(&plan);
    let run = study_dir.join(lines[0]["name"].as_str().unwrap());
    for line in lines {
        let run_dir = PathBuf::from(line["run_dir"].as_str().unwrap());
        assert!(run_dir.is_absolute(), "{line}");
        assert_eq!(run_dir, study_dir.join(line["name"].as_str().unwrap()));
    }
    let job: Value =
        serde_yaml::from_str(&std::fs::read_to_string(study_dir.join("k8s-job.yaml")).unwrap())
            .unwrap();
    let command = &job["spec"]["template"]["spec"]["containers"][0]["command"];
    assert_eq!(command[4], json!(plan));

    // A task started elsewhere (as a pod, or an sbatch from another folder) trains in the
    // study folder, and compare --study, from where the plan was made, finds it done.
    let elsewhere = root.join("elsewhere");
    let output = task(&plan, 0, &elsewhere);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        list_dir(&elsewhere).is_empty(),
        "{:?}",
        list_tree(&elsewhere)
    );
    assert!(
        run.join("summary.json").is_file(),
        "{:?}",
        list_tree(&study_dir)
    );
    let output = common::compare_study(&study, Path::new("rel"))
        .arg("--data-dir")
        .arg(embedded_data())
        .current_dir(&here)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("0 to train"),
        "{}",
        describe(&output)
    );
}

//! Property tests of everything that reads user input: the config parser, the `--set` parser,
//! the study parser, the run-folder reader, the claims parser and the plan reader. Inputs are the
//! shipped files (and a plan written from them), mutated by a seeded generator (bytes flipped,
//! inserted, deleted, cut; values replaced by values of other types, huge, negative, non-finite
//! or nested; keys added and removed; for plans, lines duplicated and run folders pointed
//! elsewhere). The property: every input gets a result or an error, never a panic (an accepted
//! claims file judges in bounded time, and a plan the reader accepts trains each line in its own
//! run folder). The seed and the case counts are fixed, so a failure repeats exactly; each case's
//! input is printed when it panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bn_exp::config::{apply_override, config_from_value, parse_json_strict};
use bn_exp::rng::Rng;
use bn_exp::run::Run;
use serde_json::{Value, json};

use crate::common::{self, repo};

const CONFIG_CASES: usize = 3000;
const OVERRIDE_CASES: usize = 3000;
const STUDY_CASES: usize = 1000;
const RUN_FOLDER_CASES: usize = 300;

fn shipped(dir: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    files.sort();
    files
}

/// Run `f` on `input`; a panic fails the test with the input that caused it.
fn no_panic<T>(what: &str, input: &str, f: impl FnOnce() -> T) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        panic!("{what} panicked on input:\n{input}");
    }
}

/// Byte-level mutations of a text: flip, insert, delete, duplicate a span, or cut it short.
fn mutate_text(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                let byte = b"{}[]\",:-.0123456789eE \n\\"[rng.below(24)];
                bytes.insert(at, byte);
            }
            2 => {
                bytes.remove(at);
            }
            3 => {
                let end = (at + rng.below(16)).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A JSON value of a random kind, often one a config does not expect.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(u64::MAX),
        5 => json!(1e300),
        6 => json!(-1e-300),
        7 => json!(9007199254740993u64),
        8 => json!("none"),
        9 => json!(""),
        10 => json!([1, 2, 3]),
        11 => json!([]),
        12 => json!({"nested": {"deeper": [null]}}),
        _ => json!(1 << rng.below(40)),
    }
}

/// Value-level mutations: replace a leaf or an object, delete a key, add a stray key.
fn mutate_value(rng: &mut Rng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.below(4) > 0 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            match rng.below(6) {
                0 => {
                    map.remove(key);
                }
                1 => {
                    map.insert(key.clone(), odd_value(rng));
                }
                2 => {
                    map.insert(format!("{key}_typo"), odd_value(rng));
                }
                _ => mutate_value(rng, map.get_mut(key).unwrap()),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.below(3) > 0 => {
            let at = rng.below(items.len());
            mutate_value(rng, &mut items[at]);
        }
        other => *other = odd_value(rng),
    }
}

#[test]
fn the_config_parser_never_panics() {
    let files = shipped("configs");
    let mut rng = Rng::new(0xF022);
    for case in 0..CONFIG_CASES {
        let (_, text) = &files[case % files.len()];
        if case % 2 == 0 {
            let input = mutate_text(&mut rng, text);
            no_panic("the config parser", &input, || {
                parse_json_strict(&input).and_then(config_from_value)
            });
        } else {
            let mut value: Value = serde_json::from_str(text).unwrap();
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut rng, &mut value);
            }
            let input = value.to_string();
            no_panic("the config parser", &input, || config_from_value(value));
        }
    }
}

#[test]
fn the_set_parser_never_panics() {
    const KEYS: [&str; 12] = [
        "optim.lr",
        "seed",
        "model.hidden",
        "model.channels",
        "norm.kind",
        "bn.placement",
        "probe.bins",
        "batch_size",
        "name",
        "",
        "a..b",
        "steps.x",
    ];
    const VALUES: [&str; 14] = [
        "1e309",
        "NaN",
        "-inf",
        "[",
        "{\"a\":",
        "[1,[2]]",
        "\"x\"",
        "none",
        "",
        "=",
        "-0",
        "99999999999999999999999",
        "null",
        "{\"kind\":\"batch\"}",
    ];
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("configs/smoke.json")).unwrap())
            .unwrap();
    let mut rng = Rng::new(0x5E7);
    for _ in 0..OVERRIDE_CASES {
        let pick = KEYS[rng.below(KEYS.len())];
        let key = mutate_text(&mut rng, pick);
        let value = VALUES[rng.below(VALUES.len())];
        let assignment = match rng.below(4) {
            0 => key.clone(),
            _ => format!("{key}={value}"),
        };
        let mut config = base.clone();
        no_panic("the --set parser", &assignment, || {
            apply_override(&mut config, &assignment).and_then(|_| config_from_value(config))
        });
    }
}

#[test]
fn the_study_parser_never_panics() {
    let files = shipped("configs/studies");
    let mut rng = Rng::new(0x57D);
    for case in 0..STUDY_CASES {
        let (path, text) = &files[case % files.len()];
        let input = if case % 2 == 0 {
            mutate_text(&mut rng, text)
        } else {
            let mut value: Value = serde_json::from_str(text).unwrap();
            mutate_value(&mut rng, &mut value);
            value.to_string()
        };
        no_panic("the study parser", &input, || {
            bn_exp::compare::parse_study(&input, path)
                .and_then(|study| bn_exp::compare::check_run_configs(&study))
        });
    }
}

/// A real run folder's files, written once by the binary, to mutate.
fn sample_run(dir: &Path) -> Vec<(String, String)> {
    let out = dir.join("sample");
    let o = common::smoke_train(&out)
        .args(["--quiet", "--set", "steps=200"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    [
        "config.json",
        "metrics.jsonl",
        "activations.jsonl",
        "summary.json",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read_to_string(out.join(f)).unwrap()))
    .collect()
}

#[test]
fn the_run_folder_reader_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_run(tmp.path());
    let mut rng = Rng::new(0x2E4D);
    for case in 0..RUN_FOLDER_CASES {
        let dir = tmp.path().join(format!("case-{case}"));
        std::fs::create_dir(&dir).unwrap();
        let mut described = String::new();
        for (name, text) in &files {
            let text = match rng.below(4) {
                0 => continue, // the file is missing
                1 => text.clone(),
                _ => mutate_text(&mut rng, text),
            };
            described.push_str(&format!("--- {name}\n{text}\n"));
            std::fs::write(dir.join(name), text).unwrap();
        }
        no_panic("the run-folder reader", &described, || {
            let run = Run::read(&dir);
            (run.final_acc(), run.population_acc(), run.drift(200))
        });
        no_panic("compare's run loader", &described, || {
            bn_exp::compare::load_run(&dir).ok()
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The claims file (`bn-exp reproduce --claims`).

const CLAIMS_CASES: usize = 3000;

/// The keys of a claims file a reader can look for in an error (the one-letter group keys `a`
/// and `b` are named in their path, `claims[0].tests[0].a`).
const CLAIMS_KEYS: [&str; 20] = [
    "description",
    "bootstrap",
    "resamples",
    "seed",
    "quick",
    "seeds",
    "note",
    "set",
    "claims",
    "id",
    "statement",
    "source",
    "tests",
    "setting",
    "study",
    "metric",
    "threshold",
    "better",
    "min_effect",
    "min_seeds",
];

/// The shipped claims file and the folder of the studies it names.
fn shipped_claims() -> (String, PathBuf) {
    let text = std::fs::read_to_string(repo().join("configs/claims.json")).unwrap();
    (text, repo().join("configs/studies"))
}

/// Parse a claims text as `reproduce` does, and when it is accepted, judge three seeds with its
/// bootstrap: the bootstrap it allows must run in bounded time. A panic fails the test with the
/// input; so does a case slower than a few seconds, or an error that names no key and no place.
fn check_claims_input(input: &str, studies: &Path) -> Result<(), String> {
    use bn_exp::reproduce::claims::parse_claims;
    use bn_exp::reproduce::verdict::{Better, judge};
    let started = std::time::Instant::now();
    let mut outcome = Err(String::new());
    no_panic("the claims parser", input, || {
        outcome = match parse_claims(input, studies) {
            Ok(claims) => {
                let seeds = [Some(0.97), Some(0.98), Some(0.975)];
                judge(&seeds, &seeds, Better::Higher, 0.0, 2, claims.bootstrap);
                Ok(())
            }
            Err(err) => Err(format!("{err:#}")),
        };
    });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the claims parser took {:?} on input:\n{input}",
        started.elapsed()
    );
    if let Err(err) = &outcome {
        let words: Vec<&str> = err
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let names_a_key = CLAIMS_KEYS.iter().any(|key| words.contains(key));
        let names_a_place = err.contains("line ") && err.contains("column ");
        assert!(
            names_a_key || names_a_place,
            "the error names no key and no place: {err}\non input:\n{input}"
        );
    }
    outcome
}

#[test]
fn the_claims_parser_never_panics_and_names_what_is_wrong() {
    let (text, studies) = shipped_claims();
    check_claims_input(&text, &studies).expect("the shipped claims file is valid");
    let mut rng = Rng::new(0xC1A1);
    for case in 0..CLAIMS_CASES {
        let input = match case % 3 {
            0 => mutate_text(&mut rng, &text),
            1 => {
                let mut value: Value = serde_json::from_str(&text).unwrap();
                for _ in 0..1 + rng.below(3) {
                    mutate_value(&mut rng, &mut value);
                }
                value.to_string()
            }
            // Cut short anywhere: a torn or half-written file.
            _ => String::from_utf8_lossy(&text.as_bytes()[..rng.below(text.len())]).into_owned(),
        };
        let _ = check_claims_input(&input, &studies);
    }
}

/// The inputs that used to be accepted and miscounted or exhaust the machine, each refused
/// with the key it concerns: a seed or a claim id twice, a key twice, and resamples out of
/// bounds or of the wrong type.
#[test]
fn claims_that_count_twice_or_ask_too_much_are_refused_by_key() {
    let (text, studies) = shipped_claims();
    let shipped: Value = serde_json::from_str(&text).unwrap();
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut value = shipped.clone();
        edit(&mut value);
        value.to_string()
    };
    let mut cases: Vec<(String, &str)> = vec![
        (
            edited(&|v| v["quick"]["seeds"] = json!([0, 1, 0])),
            "quick.seeds lists seed 0 twice",
        ),
        (
            edited(&|v| v["quick"]["seeds"] = json!([7, 7])),
            "quick.seeds lists seed 7 twice",
        ),
        (
            edited(&|v| {
                let first = v["claims"][0].clone();
                v["claims"].as_array_mut().unwrap().push(first);
            }),
            "the id of claims[0] too",
        ),
        (
            edited(&|v| v["claims"][1]["id"] = v["claims"][0]["id"].clone()),
            "claims[1].id",
        ),
        (
            text.replacen(
                "\"resamples\": 10000,",
                "\"resamples\": 10000, \"resamples\": 1,",
                1,
            ),
            "\"resamples\" is given twice",
        ),
        (
            text.replacen("\"seed\": 2015", "\"seed\": 2015, \"seed\": 2016", 1),
            "\"seed\" is given twice",
        ),
    ];
    for (resamples, says) in [
        (json!(1_000_001), "bootstrap.resamples is 1000001"),
        (json!(u64::MAX), "bootstrap.resamples"),
        (json!(99), "bootstrap.resamples is 99"),
        (json!(0), "bootstrap.resamples is 0"),
        (json!(-1), "bootstrap.resamples"),
        (json!(1e300), "bootstrap.resamples"),
        (json!("10000"), "bootstrap.resamples"),
        (Value::Null, "bootstrap.resamples"),
    ] {
        cases.push((
            edited(&|v| v["bootstrap"]["resamples"] = resamples.clone()),
            says,
        ));
    }
    for (key, odd) in [
        ("description", json!(3)),
        ("bootstrap", json!([1])),
        ("quick", json!("quick")),
        ("claims", json!({})),
    ] {
        cases.push((edited(&|v| v[key] = odd.clone()), key));
    }
    for (input, says) in &cases {
        let err = check_claims_input(input, &studies).expect_err(says);
        assert!(err.contains(says), "wanted {says:?}, got: {err}");
    }
    // The bound itself is accepted, and judging with it stays quick (check_claims_input).
    let most = edited(&|v| v["bootstrap"]["resamples"] = json!(1_000_000));
    check_claims_input(&most, &studies).expect("a million resamples are allowed");
}

// Plan files: `bn-exp run --plan` reads a file anyone with access to the results folder could
// have edited, and trains where its lines say.

const PLAN_CASES: usize = 1500;

/// Run folders a line could point to instead of its own.
fn hostile_run_dir(rng: &mut Rng, study_dir: &Path, names: &[String]) -> Value {
    let other = &names[rng.below(names.len())];
    let paths = [
        String::new(),
        ".".into(),
        "..".into(),
        "../x".into(),
        "/".into(),
        "/etc".into(),
        other.clone(),
        format!("./{other}"),
        format!("results/{other}"),
        study_dir.display().to_string(),
        format!("{}/", study_dir.display()),
        study_dir.join("..").display().to_string(),
        study_dir.join(other).join("..").display().to_string(),
        study_dir.join("..").join(other).display().to_string(),
        study_dir.join(other).join("x").display().to_string(),
        study_dir.join(format!("{other}\n")).display().to_string(),
        study_dir
            .with_file_name("other")
            .join(other)
            .display()
            .to_string(),
        "x".repeat(5000),
    ];
    match rng.below(paths.len() + 2) {
        i if i < paths.len() => json!(paths[i]),
        i if i == paths.len() => json!(study_dir.join(other)),
        _ => odd_value(rng),
    }
}

/// A mutation of a plan's text: bytes, lines cut, duplicated, swapped or dropped, a line's
/// run folder, name or config changed.
fn mutate_plan(rng: &mut Rng, text: &str, study_dir: &Path, names: &[String]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for _ in 0..1 + rng.below(2) {
        if lines.is_empty() {
            break;
        }
        let at = rng.below(lines.len());
        match rng.below(8) {
            0 => return mutate_text(rng, &lines.join("\n")),
            1 => {
                let cut = rng.below(lines[at].len() + 1);
                lines[at] = String::from_utf8_lossy(&lines[at].as_bytes()[..cut]).into_owned();
                lines.truncate(at + 1);
            }
            2 => {
                let copy = lines[rng.below(lines.len())].clone();
                lines.insert(at, copy);
            }
            3 => {
                let other = rng.below(lines.len());
                lines.swap(at, other);
            }
            4 => {
                lines.remove(at);
            }
            _ => {
                let Ok(mut entry) = serde_json::from_str::<Value>(&lines[at]) else {
                    continue;
                };
                let Some(object) = entry.as_object_mut() else {
                    continue;
                };
                let other = json!(names[rng.below(names.len())]);
                match rng.below(5) {
                    0 | 1 => {
                        object.insert("run_dir".into(), hostile_run_dir(rng, study_dir, names));
                    }
                    2 => {
                        object.insert("name".into(), other);
                    }
                    3 => {
                        let key = ["name", "study"][rng.below(2)];
                        let value = match rng.below(2) {
                            0 => other,
                            _ => odd_value(rng),
                        };
                        if let Some(config) =
                            object.get_mut("config").and_then(Value::as_object_mut)
                        {
                            config.insert(key.into(), value);
                        }
                    }
                    _ => mutate_value(rng, &mut entry),
                }
                lines[at] = entry.to_string();
            }
        }
    }
    lines.join("\n")
}

/// What the reader may accept of a plan: each line its own index, a run named once, trained in
/// its own folder directly inside the plan's folder, with a config naming that run and study.
fn assert_plan_is_sound(entries: &[bn_exp::compare::PlanEntry], study_dir: &Path, input: &str) {
    let mut names = std::collections::HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let own = study_dir.join(&entry.name);
        assert!(
            entry.index == i
                && entry.run_dir == own
                && own.parent() == Some(study_dir)
                && !entry.name.is_empty()
                && !entry.name.starts_with('.')
                && entry.config["name"] == json!(entry.name)
                && entry.config["study"] == json!("fuzzed")
                && names.insert(entry.name.clone()),
            "the plan reader accepted entry {i}, {entry:?}, of:\n{input}"
        );
    }
}

#[test]
fn the_plan_reader_never_panics_and_accepts_only_each_lines_own_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("fuzzed.json");
    let spec = json!({
        "study": "fuzzed", "base": repo().join("configs/smoke.json"),
        "grid": {"norm.kind": ["none", "batch"], "seed": [0, 1]}
    });
    std::fs::write(&study, spec.to_string()).unwrap();
    common::plan_study(&study, &tmp.path().join("results"));
    let study_dir = tmp.path().join("results/fuzzed").canonicalize().unwrap();
    let plan = study_dir.join("plan.jsonl");
    let text = std::fs::read_to_string(&plan).unwrap();
    let original = bn_exp::compare::read_plan(&plan).unwrap();
    let names: Vec<String> = original.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names.len(), 4);
    let mut rng = Rng::new(0x91A);
    let mut accepted = 0;
    for _ in 0..PLAN_CASES {
        let input = mutate_plan(&mut rng, &text, &study_dir, &names);
        std::fs::write(&plan, &input).unwrap();
        let read = catch_unwind(AssertUnwindSafe(|| bn_exp::compare::read_plan(&plan)));
        let Ok(read) = read else {
            panic!("the plan reader panicked on input:\n{input}");
        };
        if let Ok(entries) = read {
            assert_plan_is_sound(&entries, &study_dir, &input);
            accepted += 1;
            for entry in entries {
                no_panic("the config of a plan entry", &input, || {
                    config_from_value(entry.config)
                });
            }
        }
    }
    // Some mutations leave a sound plan (a line cut to its first lines, an unchanged value).
    assert!(
        accepted > 0 && accepted < PLAN_CASES,
        "{accepted} of {PLAN_CASES} accepted"
    );
}

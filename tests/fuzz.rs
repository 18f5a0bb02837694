//! Property tests of everything that reads user input: the config parser, the `--set` parser,
//! the study parser and the run-folder reader. Inputs are the shipped files, mutated by a
//! seeded generator (bytes flipped, inserted, deleted, cut; values replaced by values of other
//! types, huge, negative, non-finite or nested; keys added and removed). The property: every
//! input gets a result or an error, never a panic. The seed and the case counts are fixed, so a
//! failure repeats exactly; each case's input is printed when it panics.

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

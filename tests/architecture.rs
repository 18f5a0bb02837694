//! docs/architecture.md held against the code: the imports its two tables allow are the imports
//! the source makes, in both directions, so a new import (or a removed one) fails here until the
//! document says so; every file the document names exists; no file imports its parent's items.
//!
//! Imports are read from the text, as a reviewer would: `crate::m` (and `bn_exp::m` in the
//! binary) name module `m`; `super::f` names a sibling file `f`; `mod f;` a child. Test modules
//! (`#[cfg(test)]` to the end of a file) are left out: what tests import is not the structure.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::repo;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of one file: without its test module, and without comments (a doc link to
/// `crate::measures` is not an import).
fn code_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every identifier that follows `prefix` in `code`, and each first identifier inside a
/// `prefix{a, b::c}` group.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').map(ident).filter(|n| !n.is_empty()));
        } else {
            names.insert(ident(rest));
        }
    }
    names.remove("");
    names
}

/// The `.rs` files of module `name`: `src/name.rs` first, then everything under `src/name/`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let src = repo().join("src");
    let mut files = vec![src.join(format!("{name}.rs"))];
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.map(|e| e.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.retain(|f| f.exists());
    files
}

/// The library's modules, as `src/lib.rs` declares them.
fn library_modules() -> Vec<String> {
    let lib = fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// The modules of bn-exp each module's code names.
fn module_imports() -> Graph {
    let modules = library_modules();
    let mut graph = Graph::new();
    for module in &modules {
        let mut used = BTreeSet::new();
        for file in files_of(module) {
            used.extend(names_after(&code_of(&file), "crate::"));
        }
        used.retain(|m| m != module && modules.contains(m));
        graph.insert(module.clone(), used);
    }
    // The binary: main.rs, cli.rs, outcomes.rs and terminal.rs, through the library's name.
    let mut binary = BTreeSet::new();
    for file in [
        "src/main.rs",
        "src/cli.rs",
        "src/outcomes.rs",
        "src/terminal.rs",
    ] {
        binary.extend(names_after(&code_of(&repo().join(file)), "bn_exp::"));
    }
    binary.retain(|m| modules.contains(m));
    graph.insert("main, cli".to_string(), binary);
    graph
}

/// The code blocks of docs/architecture.md, in order.
fn code_blocks() -> Vec<Vec<String>> {
    let doc = fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in doc.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Vec::new()),
            }
        } else if let Some(block) = current.as_mut() {
            block.push(line.to_string());
        }
    }
    blocks
}

/// A table of `left -> right right ... (a remark)` lines. A left side may name several
/// (`run, data -> ...`); a remark in parentheses is not a name.
fn parse_table(lines: &[String]) -> Graph {
    let without_remarks = |s: &str| -> String {
        let mut out = String::new();
        let mut depth = 0;
        for c in s.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut graph = Graph::new();
    for line in lines {
        let Some((left, right)) = line.split_once("->") else {
            panic!("docs/architecture.md: a table line without `->`: {line:?}");
        };
        let targets: BTreeSet<String> = without_remarks(right)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let left = without_remarks(left);
        let left = left.trim();
        if left == "main, cli" {
            graph.insert(left.to_string(), targets);
            continue;
        }
        for name in left.split(',') {
            graph.insert(name.trim().to_string(), targets.clone());
        }
    }
    graph
}

/// What differs between the document's graph and the code's, as lines a person can act on.
fn differences(documented: &Graph, actual: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (name, uses) in actual {
        let Some(listed) = documented.get(name) else {
            out.push(format!("{name} is not in the table (it imports {uses:?})"));
            continue;
        };
        for m in uses.difference(listed) {
            out.push(format!("{name} imports {m}, which the table does not list"));
        }
        for m in listed.difference(uses) {
            out.push(format!(
                "the table lists {name} -> {m}, which the code does not import"
            ));
        }
    }
    for name in documented.keys().filter(|n| !actual.contains_key(*n)) {
        out.push(format!("the table names {name}, which is not a module"));
    }
    out
}

#[test]
fn the_module_table_is_the_imports_of_the_code() {
    let documented = parse_table(&code_blocks()[0]);
    let diff = differences(&documented, &module_imports());
    assert!(
        diff.is_empty(),
        "docs/architecture.md's module table and the code disagree:\n{}",
        diff.join("\n")
    );
}

/// The files of `module` (one with a face and private files) and which of their siblings each
/// names; the root file names its children (`mod f;`).
fn file_imports(module: &str) -> Graph {
    let mut graph = Graph::new();
    let root = repo().join("src").join(format!("{module}.rs"));
    let root_code = code_of(&root);
    let children: BTreeSet<String> = root_code
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("pub ");
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect();
    graph.insert(format!("{module}.rs"), children.clone());
    for child in &children {
        let path = repo().join("src").join(module).join(format!("{child}.rs"));
        let mut used = names_after(&code_of(&path), "super::");
        used.retain(|n| children.contains(n));
        if !used.is_empty() {
            graph.insert(format!("{module}/{child}"), used);
        }
    }
    graph
}

#[test]
fn the_file_table_is_the_imports_inside_compare_plot_and_reproduce() {
    let documented = parse_table(&code_blocks()[1]);
    let mut actual = Graph::new();
    for module in ["compare", "plot", "reproduce"] {
        actual.extend(file_imports(module));
    }
    let diff = differences(&documented, &actual);
    assert!(
        diff.is_empty(),
        "docs/architecture.md's file table and the code disagree:\n{}",
        diff.join("\n")
    );
}

/// A file imports its siblings and children, never its parent's items: `super::Name` (a type,
/// a trait, a constant) inside a module's file is how a circle of files starts. (A module's
/// root file may hold an inline module that uses the root's items: that is one file.)
#[test]
fn no_file_imports_its_parents_items() {
    let mut offenders = Vec::new();
    for module in library_modules() {
        for file in files_of(&module).into_iter().skip(1) {
            let items: Vec<String> = names_after(&code_of(&file), "super::")
                .into_iter()
                .filter(|n| n.starts_with(|c: char| c.is_uppercase()))
                .collect();
            if !items.is_empty() {
                offenders.push(format!("{}: super::{items:?}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// Every `src/…` and `tests/…` path the document names exists, so its answers to "where do I
/// add…" point at real files.
#[test]
fn every_file_the_document_names_exists() {
    let doc = fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let missing: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("src/") || s.starts_with("tests/"))
        .filter(|s| !repo().join(s).exists())
        .collect();
    assert!(missing.is_empty(), "named but missing: {missing:?}");
}

//! The tables README.md and docs/results.md show from studies are the generated ones: each
//! table below a `<!-- table: SOURCE HEADING -->` marker must equal the first table after the
//! line starting with HEADING in SOURCE (a report `bn-exp reproduce` writes).
//! `python3 scripts/sync_tables.py` rewrites them after a new report.

use crate::common::repo;

const PAGES: [&str; 2] = ["README.md", "docs/results.md"];

/// The table (consecutive lines starting with `|`) that starts at or after `from`.
fn table_from(lines: &[&str], from: usize) -> Vec<String> {
    lines
        .iter()
        .skip(from)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.to_string())
        .collect()
}

/// Every marker of `page`: (source, heading, the table right below the marker).
fn marked_tables(page: &str) -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join(page)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line
            .strip_prefix("<!-- table: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        let (source, heading) = rest.split_once(' ').expect("marker: SOURCE HEADING");
        let below: Vec<String> = lines
            .iter()
            .skip(i + 1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.to_string())
            .collect();
        found.push((source.to_string(), heading.to_string(), below));
    }
    found
}

fn source_table(source: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(source))
        .unwrap_or_else(|e| panic!("cannot read {source}: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("{source}: no line starts with {heading:?}"));
    table_from(&lines, start + 1)
}

#[test]
fn every_marked_table_equals_its_source() {
    let mut checked = 0;
    for page in PAGES {
        for (source, heading, below) in marked_tables(page) {
            let expected = source_table(&source, &heading);
            assert!(!expected.is_empty(), "{source}: no table after {heading:?}");
            assert_eq!(
                below, expected,
                "{page}: the table marked {source} {heading} differs from its source; run \
                 python3 scripts/sync_tables.py"
            );
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} marked tables");
}

/// The README's verdict table is the full report's, marker and all: removing the marker (and
/// with it the check) fails here.
#[test]
fn the_readme_verdict_table_is_the_reports() {
    let marked = marked_tables("README.md");
    let verdicts = marked
        .iter()
        .find(|(source, heading, _)| {
            source == "docs/reproduce/report.md" && heading == "## Verdicts"
        })
        .expect("README.md marks its verdict table as docs/reproduce/report.md ## Verdicts");
    assert!(verdicts.2.len() >= 2 + 9, "{:?}", verdicts.2);
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 210,
        "README.md has {} lines; the newcomer's page is at most about 200",
        readme.lines().count()
    );
}

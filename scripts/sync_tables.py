#!/usr/bin/env python3
"""Copy generated tables into the pages that show them.

A page marks a table with a line `<!-- table: SOURCE HEADING -->`: the table below the marker
is the first Markdown table after the line that starts with HEADING in SOURCE (a report that
`bn-exp reproduce` writes). This script rewrites every marked table of README.md and
docs/results.md from its source; tests/docs_tables.rs fails when one differs.

    python3 scripts/sync_tables.py          # rewrite the pages
    python3 scripts/sync_tables.py --check  # exit 1 and name each table that differs
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/results.md"]
MARKER = re.compile(r"^<!-- table: (\S+) (.+) -->$")


def source_table(source, heading):
    lines = (ROOT / source).read_text().split("\n")
    start = next((i for i, l in enumerate(lines) if l.startswith(heading)), None)
    if start is None:
        sys.exit(f"{source}: no line starts with {heading!r}")
    i = start + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    table = []
    while i < len(lines) and lines[i].startswith("|"):
        table.append(lines[i])
        i += 1
    if not table:
        sys.exit(f"{source}: no table after {heading!r}")
    return table


def sync(page, check):
    lines = (ROOT / page).read_text().split("\n")
    out, differs, i = [], [], 0
    while i < len(lines):
        out.append(lines[i])
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        old = []
        while i < len(lines) and lines[i].startswith("|"):
            old.append(lines[i])
            i += 1
        new = source_table(m.group(1), m.group(2))
        if old != new:
            differs.append(f"{page}: the table below `{lines[i - len(old) - 1]}`")
        out.extend(new)
    if not check:
        (ROOT / page).write_text("\n".join(out))
    return differs


def main():
    check = "--check" in sys.argv[1:]
    differs = [d for page in PAGES for d in sync(page, check)]
    for d in differs:
        print(("differs: " if check else "rewrote: ") + d)
    sys.exit(1 if check and differs else 0)


if __name__ == "__main__":
    main()

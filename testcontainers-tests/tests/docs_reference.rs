//! The documentation stays a true reference: every `AUDIT_*` variable the shipped binaries read
//! is in `docs/configuration.md` (and nothing there that no binary reads), and every relative
//! link in the README and `docs/` points to a file that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use testcontainers_tests::repo_root;

/// The sources of the shipped binaries (their `src/` trees, tests excluded).
const SHIPPED: [&str; 5] = [
    "common/src",
    "service/src",
    "archiver/src",
    "infra/ops/src",
    "cli/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `AUDIT_[A-Z0-9_]+` word in `text`.
fn audit_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("AUDIT_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches('_');
        // `AUDIT_` glued to a longer word (`X_AUDIT_Y`) is not ours.
        let glued = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !glued && name.len() > "AUDIT_".len() {
            names.insert(name.to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

fn read_by_code() -> BTreeSet<String> {
    let root = repo_root();
    let mut files = vec![];
    for dir in SHIPPED {
        rust_files(&root.join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // A unit test may name a variable only to show it is refused; the code's own are before.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        names.extend(audit_names(code));
    }
    names
}

#[test]
fn every_setting_the_binaries_read_is_in_the_configuration_reference_and_only_those() {
    let reference = std::fs::read_to_string(repo_root().join("docs/configuration.md")).unwrap();
    let documented = audit_names(&reference);
    let read = read_by_code();
    assert!(
        read.len() > 40,
        "too few AUDIT_* names found in the code ({}): the scan is broken",
        read.len()
    );
    let missing: Vec<_> = read.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "read by the binaries but not in docs/configuration.md: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&read).collect();
    assert!(
        stale.is_empty(),
        "in docs/configuration.md but read by no binary: {stale:?}"
    );
}

/// The targets of the inline links `[text](target)` in `markdown` that are relative paths
/// (not URLs, not anchors within the page), without their `#anchor`.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut links = vec![];
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            let target = tail[..end].split('#').next().unwrap_or_default().trim();
            if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                links.push(target.to_owned());
            }
            rest = &tail[end..];
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_readme_and_the_docs_points_to_a_file_that_exists() {
    let root = repo_root();
    let mut pages = vec![root.join("README.md"), root.join("helm/auditlog/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = vec![];
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for link in relative_links(&text) {
            checked += 1;
            let target = page.parent().unwrap().join(&link);
            if !target.exists() {
                broken.push(format!("{}: {link}", page.display()));
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: the scan is broken"
    );
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}

#[test]
fn the_scanners_find_what_they_look_for() {
    assert_eq!(
        audit_names("env = \"AUDIT_FOO\", X_AUDIT_NOT, `AUDIT_BAR_2`; AUDIT_"),
        BTreeSet::from(["AUDIT_FOO".to_owned(), "AUDIT_BAR_2".to_owned()])
    );
    assert_eq!(
        relative_links("see [a](docs/a.md#x), [b](https://x.y/z), [c](#here)\n```\n[d](e.md)\n```"),
        vec!["docs/a.md".to_owned()]
    );
}

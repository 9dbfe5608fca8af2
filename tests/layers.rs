//! The layers ARCHITECTURE.md promises, kept by a test rather than by
//! review: SQL lives only in `store/`, and the front ends (`cli/`, `web/`)
//! reach the database only through the services on `App`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Source text without `//` comments, so prose may name what code must not use.
fn code_of(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read source")
        .lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (file, line) of each place `pattern` occurs in a file under `src/` that
/// `allowed` does not accept.
fn offenders(pattern: impl Fn(&str) -> Vec<usize>, allowed: impl Fn(&Path) -> bool) -> Vec<String> {
    let root = src();
    let mut found = Vec::new();
    for file in rust_files(&root) {
        let rel = file.strip_prefix(&root).expect("under src");
        if allowed(rel) {
            continue;
        }
        let code = code_of(&file);
        for at in pattern(&code) {
            let line = code[..at].matches('\n').count() + 1;
            found.push(format!("src/{}:{line}", rel.display()));
        }
    }
    found
}

fn positions_of(code: &str, needle: &str) -> Vec<usize> {
    code.match_indices(needle).map(|(i, _)| i).collect()
}

#[test]
fn sql_lives_only_in_store() {
    let found = offenders(
        |code| positions_of(code, "sqlx::"),
        |rel| rel.starts_with("store"),
    );
    assert!(
        found.is_empty(),
        "sqlx:: outside src/store/ (move the query into a store function and call it from a service): {found:?}"
    );
}

/// `.db` followed (across white space) by `.` or `,` or `)`: a use of the
/// store handle, as opposed to a file name like "herald.db".
fn store_uses(code: &str) -> Vec<usize> {
    positions_of(code, ".db")
        .into_iter()
        .filter(|&i| {
            let rest = &code[i + 3..];
            let next_is_ident = rest
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let after = rest.trim_start();
            !next_is_ident
                && (after.starts_with('.') || after.starts_with(',') || after.starts_with(')'))
        })
        .collect()
}

#[test]
fn front_ends_go_through_services() {
    let found = offenders(store_uses, |rel| {
        !(rel.starts_with("cli") || rel.starts_with("web"))
    });
    assert!(
        found.is_empty(),
        "the CLI and the web layer must call services on App, not the store: {found:?}"
    );
}

#[test]
fn the_detectors_see_what_they_look_for() {
    // A test that could not fail would keep nothing: check the scanners.
    assert_eq!(store_uses("app.db.subscriber_by_email(&e)").len(), 1);
    assert_eq!(
        store_uses("s.app\n            .db\n            .issues(1)").len(),
        1
    );
    assert_eq!(store_uses("with_pool!(&app.db, |p| x)").len(), 1);
    assert!(store_uses(r#"dir.join("herald.db").display()"#).is_empty());
    assert!(store_uses("self.db_path.exists()").is_empty());
}

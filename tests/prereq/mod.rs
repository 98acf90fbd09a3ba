//! Missing test prerequisites (the Kafka jars, the llama.cpp server, the shared evaluation data): a test
//! that cannot run says so, and never passes silently.
//!
//! - Under CI (`CI` set to anything but `false`/`0`/empty, as CI runs `make test`) a missing prerequisite
//!   fails the test with its reason: `make test` installs everything, so a skip there is a broken setup.
//! - Elsewhere the test prints a loud banner, records itself in `target/tmp/skipped-tests.txt` and returns;
//!   `make test` prints that list at its end (`scripts/report-skips.sh`).
#![allow(dead_code)]
use std::io::Write;

/// The file `make test` reads to list the tests that skipped.
pub fn skip_log() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt")
}

/// Whether this run is CI's (`CI=true`), where nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `binary::test`, from the test binary's file name (hash removed) and the test thread's name.
fn test_name() -> String {
    let binary = std::env::args()
        .next()
        .and_then(|a| std::path::Path::new(&a).file_name().map(|f| f.to_string_lossy().into_owned()))
        .map(|f| f.rsplit_once('-').map_or(f.clone(), |(name, _hash)| name.to_string()))
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// A prerequisite of the calling test is missing: panics under CI, else prints and records the skip.
/// The caller returns right after (`prereq::missing(..); return;`).
#[track_caller]
pub fn missing(reason: &str) {
    let test = test_name();
    if in_ci() {
        panic!("{test}: prerequisite missing and CI is set, so this fails instead of skipping: {reason}");
    }
    eprintln!("\n======== SKIPPED {test}: {reason} ========\n");
    let line = format!("{test}: {reason}\n");
    let written = std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).and_then(|()| {
        std::fs::OpenOptions::new().create(true).append(true).open(skip_log())?.write_all(line.as_bytes())
    });
    if let Err(e) = written {
        eprintln!("(could not record the skip in {}: {e})", skip_log().display());
    }
}

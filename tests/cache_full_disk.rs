//! The LLM cache on a full disk (issue 17, item 4): a write that fails for lack of space is an error
//! naming the cache file, loses only the batch being written (a write is one transaction), and leaves a file
//! that opens cleanly once there is space again, with every entry written before the failure.
//!
//! The disk is made "full" by a file-size limit on this test's own process (`RLIMIT_FSIZE`, SIGXFSZ
//! ignored so a write past it fails with EFBIG), which is why this file holds one test only: the limit
//! would apply to every test of the binary running at the same time.
use fretflow::llm::cache::{CacheKey, LlmCache};
use fretflow::llm::BackendId;

fn key(batch: usize, i: usize) -> CacheKey {
    let backend = BackendId { backend: "local".into(), model: "m".into() };
    CacheKey::new(&backend, "v1", "generate", format!("{batch}/{i}").as_bytes())
}

/// A batch of 16 entries of ~8 KiB each (an LLM answer is smaller; this fills the disk sooner).
fn batch(b: usize) -> Vec<(CacheKey, String)> {
    (0..16).map(|i| (key(b, i), format!("{b}/{i} ").repeat(1024))).collect()
}

fn set_file_size_limit(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn a_cache_write_on_a_full_disk_names_the_file_and_a_reopen_with_space_keeps_every_earlier_entry() {
    // SAFETY: ignoring SIGXFSZ makes writes past the limit fail with EFBIG instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llm-cache.redb");
    let cache = LlmCache::open(&path).unwrap();
    let start = std::fs::metadata(&path).unwrap().len();
    // Room for a few batches past the file's size now.
    set_file_size_limit(start + 1024 * 1024);
    let mut written = 0;
    let error = loop {
        match cache.put_many(&batch(written)) {
            Ok(()) => written += 1,
            Err(error) => break error,
        }
        assert!(written < 1000, "the file-size limit was never reached");
    };
    set_file_size_limit(libc::RLIM_INFINITY);
    let message = error.to_string();
    eprintln!("{written} batches written before: {message}");
    assert!(written >= 1, "the first batch should fit: {message}");
    assert!(message.contains(&path.display().to_string()), "the error names the cache file: {message}");
    assert!(message.contains("File too large"), "the error says why: {message}");
    drop(cache);

    // Space again: the file opens (no damage), every batch committed before the failure is there, the
    // failed batch is not (a write is one transaction), and writing goes on.
    let cache = LlmCache::open(&path).unwrap_or_else(|e| panic!("the cache did not survive the full disk: {e}"));
    for b in 0..written {
        let keys: Vec<CacheKey> = batch(b).into_iter().map(|(k, _)| k).collect();
        let found: Vec<Option<String>> = cache.get_many(&keys).unwrap();
        assert!(found.iter().zip(batch(b)).all(|(f, (_, v))| f.as_deref() == Some(v.as_str())), "batch {b} lost");
    }
    let failed: Vec<CacheKey> = batch(written).into_iter().map(|(k, _)| k).collect();
    assert!(cache.get_many::<String>(&failed).unwrap().iter().all(Option::is_none), "half a batch was written");
    cache.put_many(&batch(written)).unwrap();
    assert_eq!(cache.len().unwrap(), 16 * (written as u64 + 1));
}

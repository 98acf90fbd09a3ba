//! The dataflow's sharded top-N retrieval on its own: peak memory and throughput per timely worker.
//! Driven by scripts/bench_retrieve.py, which writes the vectors, runs this at 1, 2 and 4 workers (one
//! process each, as a cluster on loopback, so that a process's peak RSS is a worker's) and compares the
//! query scan with faiss `IndexFlatIP` on the same vectors.
//!
//! Usage: `cargo run --example bench_retrieve -- --passages FILE --queries FILE --dim D [--n 10]
//! [--batches 10] [--late 1000] [timely args: -w, -n, -p, -h]`, where FILE is raw little-endian f32 rows.
//! Phases, each timed from its first input to the probe passing it:
//! 1. `load`: every passage but the last `--late` (each process reads every P-th row, the dataflow sends
//!    each to the worker that owns its id);
//! 2. `scan`: the queries in `--batches` epochs, each new query scanning every shard for its top N;
//! 3. `late`: the last `--late` passages in `--batches` epochs, each scored against every live query and
//!    entering the top Ns it beats.
//!
//! Prints one JSON line per process: `{"process", "processes", "workers", "passages", "queries", "load_s",
//! "scan_s", "late_s", "peak_rss_mib", "candidates"}`.
use differential_dataflow::input::InputSession;
use fretflow::dataflow::generate::Query;
use fretflow::dataflow::progress::Metrics;
use fretflow::dataflow::retrieve::RetrieveTopN;
use fretflow::dataflow::{Diff, Time};
use fretflow::records::Passage;
use fretflow::retrieve::vector::Vector;
use serde_json::json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Rows `i` of `range` with `i % every == offset` from a raw little-endian f32 file of `dim`-wide rows,
/// read one by one so that only these rows are ever in memory.
fn read_rows(
    path: &str,
    dim: usize,
    range: std::ops::Range<usize>,
    every: usize,
    offset: usize,
) -> Vec<(usize, Vector)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let total = row_count(path, dim);
    let mut buf = vec![0u8; 4 * dim];
    let mut rows = Vec::new();
    for i in range.start..range.end.min(total) {
        if i % every != offset {
            continue;
        }
        file.seek(SeekFrom::Start((i * 4 * dim) as u64))
            .and_then(|_| file.read_exact(&mut buf))
            .unwrap_or_else(|e| panic!("{path}: row {i}: {e}"));
        rows.push((i, Vector(buf.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())));
    }
    rows
}

fn row_count(path: &str, dim: usize) -> usize {
    let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).len() as usize;
    assert!(len.is_multiple_of(4 * dim), "{path}: {len} bytes is not a whole number of {dim}-dim f32 rows");
    len / (4 * dim)
}

/// Peak resident set of this process (VmHWM), MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dim: usize = arg(&args, "--dim").unwrap_or_else(|| "384".into()).parse()?;
    let n: usize = arg(&args, "--n").unwrap_or_else(|| "10".into()).parse()?;
    let batches: usize = arg(&args, "--batches").unwrap_or_else(|| "10".into()).parse()?;
    let late: usize = arg(&args, "--late").unwrap_or_else(|| "1000".into()).parse()?;
    // LibTorch intra-op threads of each worker's matrix products (1: a thread per worker, as faiss with one
    // thread per worker; more: one worker using several cores, as faiss with T OpenMP threads).
    let torch_threads: i32 = arg(&args, "--torch-threads").unwrap_or_else(|| "1".into()).parse()?;
    let passages_path = arg(&args, "--passages").ok_or_else(|| anyhow::anyhow!("--passages FILE is required"))?;
    let queries_path = arg(&args, "--queries").ok_or_else(|| anyhow::anyhow!("--queries FILE is required"))?;
    // Timely's own arguments (-w, -n, -p, -h) come after `--`.
    let timely_args: Vec<String> = args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
    let process: usize = arg(&timely_args, "-p").unwrap_or_else(|| "0".into()).parse()?;
    let processes: usize = arg(&timely_args, "-n").unwrap_or_else(|| "1".into()).parse()?;
    let total_passages = row_count(&passages_path, dim);
    let total_queries = row_count(&queries_path, dim);
    let early_count = total_passages.saturating_sub(late);
    let candidates = Arc::new(AtomicI64::new(0));
    let timings = Arc::new(std::sync::Mutex::new((0.0, 0.0, 0.0, 0usize)));
    {
        let (candidates, timings) = (Arc::clone(&candidates), Arc::clone(&timings));
        timely::execute_from_args(timely_args.into_iter(), move |worker| {
            // The scan's matrix products use --torch-threads threads (LibTorch's thread count is set per
            // thread): one by default, a thread per worker, as faiss with one thread per worker.
            tch::set_num_threads(torch_threads);
            let mut passage_input = InputSession::<Time, (Passage, Vector), Diff>::new();
            let mut query_input = InputSession::<Time, (Query, Vector), Diff>::new();
            let counted = Arc::clone(&candidates);
            let probe = worker.dataflow(|scope| {
                let top = query_input.to_collection(scope).retrieve_top_n(
                    passage_input.to_collection(scope),
                    n,
                    Arc::new(Metrics::default()),
                );
                let (probe, top) = top.probe();
                top.inspect(move |(_, _, r)| {
                    counted.fetch_add(*r as i64, Ordering::Relaxed);
                });
                probe
            });
            // Worker w of W reads rows i with i % W == w (as a source reads its partitions); the dataflow
            // sends each passage to the worker that owns its id.
            let (me, peers) = (worker.index(), worker.peers());
            let mine = |path: &str, range: std::ops::Range<usize>| read_rows(path, dim, range, peers, me);
            let passage =
                |i: usize| Passage { id: format!("p{i:06}"), title: String::new(), text: format!("passage {i}") };
            let query = |i: usize| Query {
                id: format!("q{i:06}"),
                seed_id: format!("p{i:06}"),
                task: "t".into(),
                text: format!("query {i}"),
            };
            let mut epoch: Time = 0;
            // Closes the epoch and steps until the retrieval has caught up with it.
            macro_rules! advance {
                () => {
                    epoch += 1;
                    passage_input.advance_to(epoch);
                    query_input.advance_to(epoch);
                    passage_input.flush();
                    query_input.flush();
                    worker.step_while(|| probe.less_than(&epoch));
                };
            }

            let started = Instant::now();
            for (i, v) in mine(&passages_path, 0..early_count) {
                passage_input.insert((passage(i), v));
            }
            advance!();
            let load_s = started.elapsed().as_secs_f64();

            // Feeds `rows` as `record(i)`s into `input` over `batches` epochs, each stepped to completion.
            macro_rules! in_batches {
                ($rows:expr, $input:ident, $record:expr) => {
                    let rows = $rows;
                    let mut chunks = rows.chunks(rows.len().div_ceil(batches).max(1));
                    for _ in 0..batches {
                        for (i, v) in chunks.next().unwrap_or_default() {
                            $input.insert(($record(*i), v.clone()));
                        }
                        advance!();
                    }
                };
            }

            let started = Instant::now();
            in_batches!(mine(&queries_path, 0..usize::MAX), query_input, query);
            let scan_s = started.elapsed().as_secs_f64();

            let started = Instant::now();
            in_batches!(mine(&passages_path, early_count..usize::MAX), passage_input, passage);
            let late_s = started.elapsed().as_secs_f64();
            if worker.index() == process * (peers / processes) {
                *timings.lock().unwrap() = (load_s, scan_s, late_s, worker.peers());
            }
        })
        .map_err(|e| anyhow::anyhow!("timely: {e}"))?;
    }
    let (load_s, scan_s, late_s, workers) = *timings.lock().unwrap();
    println!(
        "{}",
        json!({
            "process": process, "processes": processes, "workers": workers,
            "passages": total_passages, "queries": total_queries, "n": n,
            "load_s": load_s, "scan_s": scan_s, "late_s": late_s,
            "peak_rss_mib": peak_rss_mib(), "candidates": candidates.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

//! Scraping `fretflow --metrics` in tests: the endpoint a run names on its first line, and the samples of
//! one `GET /metrics`.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;

/// `name -> value` of every sample line of a scrape (labels kept in the name).
pub fn scrape(addr: &str) -> Option<BTreeMap<String, f64>> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: fretflow\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' ').and_then(|(name, v)| Some((name.to_owned(), v.parse().ok()?))))
            .collect(),
    )
}

/// The `host:port` of the endpoint a `fretflow ... --metrics 127.0.0.1:0` run names on its first line of
/// stdout (`metrics: http://ADDR/metrics`).
pub fn endpoint(stdout: &mut impl BufRead) -> String {
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    first
        .trim()
        .strip_prefix("metrics: http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("the first line does not name the endpoint: {first:?}"))
        .to_owned()
}

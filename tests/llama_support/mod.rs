//! The real OpenAI-compatible server of the tests: llama-cpp-python's, on the packaged SmolLM2 GGUF
//! (`make test` installs it: `scripts/setup.sh llama-server`). A test that cannot start it records itself
//! as skipped, or fails under CI (see `prereq`).
#![allow(dead_code)]
use super::prereq;
// (The including test file names `prereq`: its own `mod prereq;` or `use kafka_support::prereq;`.)
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server, killed (SIGKILL) when dropped.
pub struct LlamaServer {
    child: Child,
    /// Its OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub base: String,
    port: u16,
    log: PathBuf,
}

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The packaged GGUF, or `None` after recording the skip.
fn model() -> Option<PathBuf> {
    let importable = Command::new(python())
        .args(["-c", "import llama_cpp.server.app, uvicorn"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        prereq::missing(&format!(
            "`import llama_cpp.server.app, uvicorn` fails in {}; `make test` installs it (scripts/setup.sh \
             llama-server)",
            python().display()
        ));
        return None;
    }
    match fretflow::assets::resolve_model("SmolLM2-135M-Instruct") {
        Ok(path) => Some(path),
        Err(e) => {
            prereq::missing(&e.to_string());
            None
        }
    }
}

impl LlamaServer {
    /// Starts a server on a free port and waits until it answers `/v1/models` (at most 120 s); `None`
    /// when the server is not installed (skip recorded).
    pub fn start(log: &Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port, log)
    }

    /// As [`LlamaServer::start`], on `port`.
    pub fn start_on(port: u16, log: &Path) -> Option<Self> {
        let model = model()?;
        let child = Command::new(python())
            .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--port", &port.to_string(), "--n_ctx", "2048"])
            .arg("--model")
            .arg(&model)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start llama_cpp.server");
        let mut server = Self { child, base: format!("http://127.0.0.1:{port}/v1"), port, log: log.to_owned() };
        server.wait_ready();
        Some(server)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if models_answer(self.port) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llama_cpp.server exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "llama_cpp.server did not start in 120 s");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Whether `GET /v1/models` on `port` answers 200.
fn models_answer(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(stream, "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

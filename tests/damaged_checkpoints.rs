//! Damaged checkpoints (issue 17): a truncated or bit-flipped `model.safetensors`, or a damaged
//! `fretflow.json`, is an error naming the file when the checkpoint is loaded, never a panic.
use fretflow::embed::{EncoderOptions, SentenceEncoder};
use fretflow::train::checkpoint::read_state;
use std::path::Path;

fn base_dir() -> std::path::PathBuf {
    SentenceEncoder::from_name("all-MiniLM-L6-v2", EncoderOptions::default()).unwrap().model_dir().to_path_buf()
}

/// A copy of the base model's directory (the layout of a checkpoint) with `model.safetensors` replaced.
fn with_weights(dir: &Path, bytes: &[u8]) {
    let base = base_dir();
    for entry in std::fs::read_dir(&base).unwrap() {
        let entry = entry.unwrap();
        let to = dir.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn damaged_weights_are_errors_naming_the_file() {
    let weights = std::fs::read(base_dir().join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 7, 8, 100, header / 2, header + 8, weights.len() / 2, weights.len() - 1] {
        cases.push((format!("truncated to {cut} bytes"), weights[..cut].to_vec()));
    }
    // Flips in the length prefix and the JSON header (tensor names, dtypes, shapes, offsets).
    for (k, at) in [0usize, 3, 7, 9, 20, header / 3, header / 2, header].into_iter().enumerate() {
        let mut flipped = weights.clone();
        flipped[at] ^= 1 << (k % 8);
        cases.push((format!("bit {} of byte {at} flipped", k % 8), flipped));
    }
    for (what, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        with_weights(dir.path(), &bytes);
        let loaded =
            std::panic::catch_unwind(|| SentenceEncoder::load(dir.path(), EncoderOptions::default()).map(|_| ()));
        let Ok(result) = loaded else { panic!("{what}: loading panicked") };
        if let Err(e) = result {
            let message = e.to_string();
            assert!(
                message.contains("model.safetensors") || message.contains(&dir.path().display().to_string()),
                "{what}: {message}"
            );
        }
    }
}

#[test]
fn a_damaged_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "{", "{\"step\": \"one\"}", "[]"] {
        std::fs::write(dir.path().join("fretflow.json"), text).unwrap();
        let message = read_state(dir.path()).unwrap_err().to_string();
        assert!(message.contains("fretflow.json"), "{text:?}: {message}");
    }
}

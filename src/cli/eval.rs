//! `fretflow eval`.

/// Arguments of `fretflow eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

/// Runs `fretflow eval`.
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fretflow eval` is not built yet")
}

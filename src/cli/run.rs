//! `fretflow run`.

/// Arguments of `fretflow run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs `fretflow run`.
pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fretflow run` is not built yet")
}

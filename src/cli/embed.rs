//! `fretflow embed`.

/// Arguments of `fretflow embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {}

/// Runs `fretflow embed`.
pub fn run(_args: EmbedArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fretflow embed` is not built yet")
}

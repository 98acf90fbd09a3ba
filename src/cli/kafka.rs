//! `fretflow kafka`.

/// Arguments of `fretflow kafka`.
#[derive(Debug, clap::Args)]
pub struct KafkaArgs {}

/// Runs `fretflow kafka`.
pub fn run(_args: KafkaArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fretflow kafka` is not built yet")
}

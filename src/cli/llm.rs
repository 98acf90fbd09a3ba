//! `fretflow llm`.

/// Arguments of `fretflow llm`.
#[derive(Debug, clap::Args)]
pub struct LlmArgs {}

/// Runs `fretflow llm`.
pub fn run(_args: LlmArgs) -> anyhow::Result<()> {
    anyhow::bail!("`fretflow llm` is not built yet")
}

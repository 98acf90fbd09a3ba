//! The `fretflow` command line.
fn main() -> std::process::ExitCode {
    fretflow::cli::main()
}

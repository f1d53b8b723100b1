//! The sweep coordinator. Not built yet (issue 3): this binary only states that, so the
//! workspace layout and the no-libtorch build of the coordinator are in place and checked.

fn main() -> std::process::ExitCode {
    eprintln!("coordinator: sweeps are not implemented yet; run single trials with `worker train TRIAL.toml`");
    std::process::ExitCode::from(2)
}

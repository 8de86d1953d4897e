//! `loopback-guard`: see the library ([`loopback_guard_cli::run`]) for the commands.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut io = loopback_guard_cli::Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        style: loopback_guard_cli::Style::for_stdout(),
    };
    ExitCode::from(loopback_guard_cli::run(std::env::args_os(), &mut io))
}

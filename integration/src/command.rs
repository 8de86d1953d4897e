//! The `loopback-guard` command (crate `cli/`), run in-process: the same argument parsing,
//! decision and output as the binary, without needing it built first.

/// What one run of the command left behind.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    /// The exit status: 0 allow / valid, 1 deny / invalid, 2 bad usage or input.
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `loopback-guard <args>`, plain text (no colours), with empty standard input.
pub fn loopback_guard<S: AsRef<str>>(args: &[S]) -> CommandOutput {
    let mut stdin = std::io::empty();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut io = loopback_guard_cli::Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        style: loopback_guard_cli::Style::plain(),
    };
    let argv = std::iter::once("loopback-guard").chain(args.iter().map(AsRef::as_ref));
    let code = loopback_guard_cli::run(argv, &mut io);
    CommandOutput {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

//! Colours for a terminal, and nothing else: piped or redirected output stays plain text.

use std::io::IsTerminal;

/// ANSI styling, on or off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    enabled: bool,
}

impl Style {
    /// No colours.
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    /// Colours when standard output is a terminal and `NO_COLOR` is not set (no-color.org).
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self { enabled: std::io::stdout().is_terminal() && !no_color }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Allowed, passed, valid.
    pub fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Denied, failed, invalid.
    pub fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Would be denied (audit), skipped.
    pub fn warn(self, text: &str) -> String {
        self.paint("33", text)
    }

    pub fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_plain() {
        assert_eq!(Style::plain().bad("deny"), "deny");
        assert_eq!(Style { enabled: true }.bad("deny"), "\x1b[31mdeny\x1b[0m");
    }
}

//! Helpers of the fuzz targets: a reader of the fuzzer's bytes; the text forms Envoy hands a
//! certificate over in and the fake host come from the core's `testing` feature.

pub use loopback_guard_core::testing::{pem_encode, url_encode};

/// Reads a fuzz input front to back; past the end every read gives zeros / nothing, so any
/// input, however short, is a complete test case.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, rest)| (*b, rest));
        self.0 = rest;
        first
    }

    /// A length byte, then that many bytes.
    pub fn blob(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (blob, rest) = self.0.split_at(len);
        self.0 = rest;
        blob
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_runs_dry() {
        let mut r = Reader::new(&[3, b'a', b'b']);
        assert_eq!(r.blob(), b"ab");
        assert_eq!(r.byte(), 0);
        assert_eq!(r.blob(), b"");
        assert_eq!(r.rest(), b"");
    }
}

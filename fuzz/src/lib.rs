//! Helpers shared by the fuzz targets: the text forms Envoy hands a certificate over in, and a
//! [`Host`] whose every answer comes from the fuzzer's bytes.

use std::collections::HashMap;

use loopback_guard_core::host::{Host, HostError};

/// PEM text of DER bytes, wrapped at 64 columns as Envoy prints it.
pub fn pem_encode(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut body = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                body.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                body.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Percent-encodes every byte but ASCII letters and digits, as Envoy encodes XFCC's `Cert`.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

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

/// A [`Host`] over maps; a property set to `Err` fails as a host call can.
#[derive(Default)]
pub struct FuzzHost {
    pub properties: HashMap<String, Result<Vec<u8>, ()>>,
    pub headers: HashMap<String, String>,
    pub now: i64,
    /// Whether the request headers ended the stream.
    pub end_of_stream: bool,
}

impl FuzzHost {
    pub fn set(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.properties.insert(path.join("."), Ok(value.into()));
    }

    pub fn fail(&mut self, path: &[&str]) {
        self.properties.insert(path.join("."), Err(()));
    }
}

impl Host for FuzzHost {
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        match self.properties.get(&path.join(".")) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.clone())),
            Some(Err(())) => Err(HostError("fuzzed failure".into())),
        }
    }

    fn request_header(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(self.headers.get(name).cloned())
    }

    fn now(&self) -> Result<i64, HostError> {
        Ok(self.now)
    }

    fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_through_the_core() {
        for len in 0..70 {
            let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let pem = pem_encode(&der);
            assert_eq!(loopback_guard_core::pem::certificate_der(pem.as_bytes()), Ok(der.clone()));
            assert_eq!(loopback_guard_core::pem::certificate_der(url_encode(&pem).as_bytes()), Ok(der));
        }
    }

    #[test]
    fn reader_never_runs_dry() {
        let mut r = Reader::new(&[3, b'a', b'b']);
        assert_eq!(r.blob(), b"ab");
        assert_eq!(r.byte(), 0);
        assert_eq!(r.blob(), b"");
        assert_eq!(r.rest(), b"");
    }
}

//! The request's authority (`:authority`, or HTTP/1's `Host`), parsed by its grammar.
//!
//! The grammar is RFC 9110 §7.2 (`Host = uri-host [ ":" port ]`) over RFC 3986 §3.2.2-3.2.3,
//! narrowed where narrowing can only send a request through the full check, never admit one:
//!
//! ```text
//! authority   = host [ ":" port ]             ; no userinfo: RFC 9110 §4.2.4 forbids it
//! host        = "[" IPv6address "]"           ; IPvFuture and zone ids are refused
//!             / IPv4address                   ; dotted quad, dec-octets without leading zeros
//!             / reg-name
//! reg-name    = 1*255( ALPHA / DIGIT / "-" / "." / "_" / "~" )
//!                                             ; RFC 3986's unreserved characters only: no
//!                                             ; pct-encoding, no sub-delims, ASCII only
//! port        = 1*5DIGIT                      ; at most 65535; an empty port is refused
//! ```
//!
//! Nothing may follow the port, and nothing may follow `]` but `:port`. A string that does not
//! match is no authority at all: it is neither loopback nor any `exempt_authorities` entry.
//!
//! Choices the RFCs leave open, and why:
//! - **An empty port** (`localhost:`) is allowed by RFC 3986 and means the default port; no
//!   client sends it, and refusing it keeps one spelling per authority.
//! - **`127.1`, `0x7f.0.0.1`, `127.000.0.1`** are reg-names under RFC 3986, not addresses
//!   (only the dotted quad is IPv4address), so they are not loopback.
//! - **`localhost.`** (the fully qualified form) and **`x.localhost`** are names other than
//!   `localhost`. Envoy routes the Host as written, and a suffix or prefix wildcard virtual host
//!   could match them, so they are not loopback.
//! - **`[::ffff:127.0.0.1]`** is the IPv4-mapped form of `127.0.0.1`: loopback, like it.
//!
//! The function is total: every input gives an [`Authority`] or an [`AuthorityError`].
//!
//! Why not the `http` crate's `uri::Authority` (1.5, checked): it parses a URI's authority, so
//! it takes userinfo (`localhost:80@api.evil.example` is host `api.evil.example`), drops what
//! follows `]` (`[::1]x` is host `[::1]`), reads `localhost:+80` as port 80 and `localhost:99999`
//! as no port, and takes sub-delims in a name (`localhost,x`). Each is a look-alike here. It
//! stays the reference of the `authority` fuzz target: whatever this parser takes, `http` takes
//! with the same host and port.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest reg-name accepted (a DNS name is at most 253 characters).
const MAX_HOST: usize = 255;

/// A parsed `host [":" port]`, borrowing the name from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    pub host: HostPart<'a>,
    pub port: Option<u16>,
}

/// The host of an [`Authority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPart<'a> {
    Ip(IpAddr),
    /// A reg-name, as written (compared case-insensitively).
    Name(&'a str),
}

/// Why a string is not an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityError {
    Empty,
    UserInfo,
    BadIpLiteral,
    BadHost,
    TooLong,
    BadPort,
}

impl AuthorityError {
    /// What is wrong, in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "the host is empty",
            Self::UserInfo => "it has userinfo ('@')",
            Self::BadIpLiteral => "a bracketed host must be an IPv6 address, followed by nothing but ':port'",
            Self::BadHost => {
                "a host name may hold only letters, digits, '-', '.', '_' and '~' (ASCII, no %-encoding)"
            }
            Self::TooLong => "the host is longer than 255 characters",
            Self::BadPort => "a port must be 1 to 5 digits, at most 65535, with nothing after it",
        }
    }
}

impl fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'a> Authority<'a> {
    /// Parses `raw` by the grammar in this module's documentation.
    pub fn parse(raw: &'a str) -> Result<Self, AuthorityError> {
        if raw.contains('@') {
            return Err(AuthorityError::UserInfo);
        }
        if let Some(bracketed) = raw.strip_prefix('[') {
            let (literal, after) = bracketed.split_once(']').ok_or(AuthorityError::BadIpLiteral)?;
            let ip: Ipv6Addr = literal.parse().map_err(|_| AuthorityError::BadIpLiteral)?;
            let port = match after {
                "" => None,
                _ => Some(port(after.strip_prefix(':').ok_or(AuthorityError::BadIpLiteral)?)?),
            };
            return Ok(Authority { host: HostPart::Ip(IpAddr::V6(ip)), port });
        }
        let (name, digits) = match raw.split_once(':') {
            None => (raw, None),
            Some((name, digits)) => (name, Some(digits)),
        };
        if name.is_empty() {
            return Err(AuthorityError::Empty);
        }
        if name.len() > MAX_HOST {
            return Err(AuthorityError::TooLong);
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
            return Err(AuthorityError::BadHost);
        }
        // std's parser takes exactly the dotted quad of dec-octets (no leading zeros, no
        // shorthand, no hex): everything else is a name.
        let host = match name.parse::<Ipv4Addr>() {
            Ok(ip) => HostPart::Ip(IpAddr::V4(ip)),
            Err(_) => HostPart::Name(name),
        };
        Ok(Authority { host, port: digits.map(port).transpose()? })
    }

    /// `localhost`, an address in 127.0.0.0/8, `::1`, or an IPv4-mapped loopback address.
    pub fn is_loopback(&self) -> bool {
        match self.host {
            HostPart::Ip(ip) => ip.to_canonical().is_loopback(),
            HostPart::Name(name) => name.eq_ignore_ascii_case("localhost"),
        }
    }

    /// Whether `self` (a request's) is the configured `entry`: the same host, and the same
    /// port where the entry names one.
    pub fn is(&self, entry: &Authority<'_>) -> bool {
        let same_host = match (self.host, entry.host) {
            (HostPart::Ip(a), HostPart::Ip(b)) => a == b,
            (HostPart::Name(a), HostPart::Name(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        same_host && (entry.port.is_none() || entry.port == self.port)
    }
}

/// `1*5DIGIT`, at most 65535 (`str::parse` alone would take a sign).
fn port(digits: &str) -> Result<u16, AuthorityError> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityError::BadPort);
    }
    digits.parse().map_err(|_| AuthorityError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_case;

    /// What the guard makes of an authority: admitted as loopback, admitted as the
    /// `exempt_authorities` entry `probe.local` or `health.local:8080`, a name that is neither,
    /// or not an authority at all (and why).
    #[derive(Debug, PartialEq)]
    enum Seen {
        Loopback,
        Listed,
        Other,
        Unparsed(AuthorityError),
    }

    fn seen(raw: &str) -> Seen {
        let entries =
            [Authority::parse("probe.local").unwrap(), Authority::parse("health.local:8080").unwrap()];
        match Authority::parse(raw) {
            Err(e) => Seen::Unparsed(e),
            Ok(a) if a.is_loopback() => Seen::Loopback,
            Ok(a) if entries.iter().any(|entry| a.is(entry)) => Seen::Listed,
            Ok(_) => Seen::Other,
        }
    }

    #[test_case]
    fn look_alikes_are_not_loopback() {
        use AuthorityError::*;
        let long = format!("{}.example", "a".repeat(300));
        let cases: &[(&str, Seen)] = &[
            // Issue 17's findings: each was admitted as a loopback probe.
            ("localhost:80@api.evil.example", Seen::Unparsed(UserInfo)),
            ("127.0.0.1:1@api.evil.example", Seen::Unparsed(UserInfo)),
            ("localhost:x.evil.example", Seen::Unparsed(BadPort)),
            ("[::1].evil.example", Seen::Unparsed(BadIpLiteral)),
            ("[::1]@api.evil.example", Seen::Unparsed(UserInfo)),
            ("probe.local:x.evil.example", Seen::Unparsed(BadPort)),
            ("probe.local:1@api.evil.example", Seen::Unparsed(UserInfo)),
            // More of the kind.
            ("localhost:80:80", Seen::Unparsed(BadPort)),
            ("localhost:+80", Seen::Unparsed(BadPort)),
            ("localhost:-1", Seen::Unparsed(BadPort)),
            ("localhost:\u{ff18}\u{ff10}", Seen::Unparsed(BadPort)),
            ("localhost:", Seen::Unparsed(BadPort)),
            ("localhost:65536", Seen::Unparsed(BadPort)),
            ("localhost:000080", Seen::Unparsed(BadPort)),
            ("localhost :80", Seen::Unparsed(BadHost)),
            (" localhost", Seen::Unparsed(BadHost)),
            ("localhost/x", Seen::Unparsed(BadHost)),
            ("localhost\u{0}", Seen::Unparsed(BadHost)),
            ("127.0.0.1%00", Seen::Unparsed(BadHost)),
            ("127.0.0.1%2e", Seen::Unparsed(BadHost)),
            ("l\u{f6}calhost", Seen::Unparsed(BadHost)),
            ("\u{ff4c}ocalhost", Seen::Unparsed(BadHost)),
            ("localhost,evil.example", Seen::Unparsed(BadHost)),
            ("[::1", Seen::Unparsed(BadIpLiteral)),
            ("[::1]]", Seen::Unparsed(BadIpLiteral)),
            ("[::1]:", Seen::Unparsed(BadPort)),
            ("[::1]80", Seen::Unparsed(BadIpLiteral)),
            ("[127.0.0.1]", Seen::Unparsed(BadIpLiteral)),
            ("[fe80::1%25eth0]", Seen::Unparsed(BadIpLiteral)),
            ("[v1.fe]", Seen::Unparsed(BadIpLiteral)),
            ("::1", Seen::Unparsed(Empty)),
            ("", Seen::Unparsed(Empty)),
            (":80", Seen::Unparsed(Empty)),
            (&long, Seen::Unparsed(TooLong)),
            // Grammatical names that only look like loopback.
            ("127.1", Seen::Other),
            ("0x7f.0.0.1", Seen::Other),
            ("127.000.0.1", Seen::Other),
            ("127.0.0.01", Seen::Other),
            ("2130706433", Seen::Other),
            ("localhost.", Seen::Other),
            ("x.localhost", Seen::Other),
            ("localhost.evil.example", Seen::Other),
            ("127.0.0.1.evil.example", Seen::Other),
            ("probe.local.evil.example", Seen::Other),
            ("health.local:80", Seen::Other),
            ("health.local", Seen::Other),
            ("[::2]", Seen::Other),
            // Real probes.
            ("localhost", Seen::Loopback),
            ("localhost:8080", Seen::Loopback),
            ("LOCALHOST", Seen::Loopback),
            ("LocalHost:1", Seen::Loopback),
            ("127.0.0.1", Seen::Loopback),
            ("127.0.0.2", Seen::Loopback),
            ("127.255.255.254:16443", Seen::Loopback),
            ("[::1]:80", Seen::Loopback),
            ("[::1]", Seen::Loopback),
            ("[0:0:0:0:0:0:0:1]", Seen::Loopback),
            ("[::ffff:127.0.0.1]:80", Seen::Loopback),
            ("localhost:0", Seen::Loopback),
            ("localhost:65535", Seen::Loopback),
            ("probe.local", Seen::Listed),
            ("PROBE.local:9", Seen::Listed),
            ("health.local:8080", Seen::Listed),
        ];
        for (raw, expected) in cases {
            assert_eq!(&seen(raw), expected, "{raw:?}");
        }
    }

    #[test_case]
    fn parts() {
        let a = Authority::parse("Probe.Local:8080").unwrap();
        assert_eq!(a, Authority { host: HostPart::Name("Probe.Local"), port: Some(8080) });
        let a = Authority::parse("[::1]:443").unwrap();
        assert_eq!(a.host, HostPart::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(a.port, Some(443));
        // An IPv4 entry and the IPv4-mapped address are different hosts.
        let v4 = Authority::parse("127.0.0.1").unwrap();
        assert!(!Authority::parse("[::ffff:127.0.0.1]").unwrap().is(&v4));
        assert!(Authority::parse("127.0.0.1:5").unwrap().is(&v4));
    }
}

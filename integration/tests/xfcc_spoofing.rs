//! Spoofing `x-forwarded-client-cert`: a process with its own (rogue) certificate sends a forged
//! XFCC header that names the rightful app, with the app's certificate, URI and hash, or a header
//! made to confuse the parser. One test per `forward_client_cert_details` mode; each runs the same
//! rows against one Envoy and asserts the exact outcome of each.
//!
//! What the outcome depends on:
//! - Envoy 1.38 and later give the filter `connection.peer_certificate`: the header is never read,
//!   every rogue request is denied for the rogue's own certificate (`principal_mismatch`).
//! - Older Envoy (the matrix runs 1.36.4) has no such property, and the filter takes the
//!   certificate from the XFCC element this proxy adds, accepted only if its `Hash` equals the
//!   connection's certificate digest and its `Cert` hashes to it. What reaches the filter depends
//!   on the mode: SANITIZE drops the header, SANITIZE_SET replaces it with this proxy's element,
//!   APPEND_FORWARD appends that element to the client's header, FORWARD_ONLY and
//!   ALWAYS_FORWARD_ONLY pass the client's header on and add nothing. Only an element carrying
//!   the connection's own certificate is ever taken: a forged one ends in
//!   `certificate_unavailable`, or in the rogue's own identity from this proxy's element, never
//!   in the rightful app's.
//!
//! After all rows, the rightful app asks once more (with a new certificate, so the filter parses
//! it), Envoy's Wasm stats must not have changed (no VM created, reloaded or failed), and its log
//! must hold no Wasm error. No row may be allowed for anyone but the rightful app.

use loopback_guard_integration::envoy::{envoy_version, Envoy, ForwardClientCert, Listener, Settings, Stats};
use loopback_guard_integration::pki::{spiffe_id, CertSpec, Credential, Pki, APP_ID};
use loopback_guard_integration::scenario::{all_as_expected, report, run_cases, Case, Expected};
use loopback_guard_integration::{url_encode, Error, Result};

const XFCC: &str = "x-forwarded-client-cert";

/// Envoy's default limit on the request headers (`max_request_headers_kb`: 60 KiB).
const HEADERS_LIMIT: usize = 60 * 1024;

/// How a client-sent XFCC header fares where the filter reads XFCC.
#[derive(Clone, Copy)]
enum Forged {
    /// It does not prove the connection's certificate (wrong hash, a certificate that does not
    /// hash to the digest, no certificate, or not parsable).
    Rejected,
    /// Its last element is the sender's own, true element (its own hash and certificate).
    Own,
}

/// Who sends a row's request: what the filter decides on their own certificate, on each path.
#[derive(Clone, Copy)]
enum Sender {
    App,
    Rogue,
    /// A rogue certificate whose URI SAN carries XFCC syntax, to break into the element this
    /// proxy writes: not a valid SPIFFE ID; on the XFCC path that element no longer proves it.
    Injector,
}

struct Row {
    name: String,
    sender: Sender,
    credential: Credential,
    listener: Listener,
    /// The XFCC header the client sends, as bytes.
    header: Option<Vec<u8>>,
    forged: Forged,
    /// With APPEND_FORWARD: whether the client's header followed by `,<this proxy's element>`
    /// still parses, so that the last element is this proxy's.
    joins: bool,
    /// Envoy refuses the request before the filter runs (headers over its limit).
    too_large: bool,
    /// The certificate is the previous row's, and must meet the same outcome: the filter
    /// remembers a certificate it has read by its digest (which the TLS handshake binds to the
    /// client's key), whatever header comes with it later.
    again: bool,
}

/// Issues a new certificate for every row, so that no row's outcome comes from the filter's
/// certificate cache (keyed by the certificate's digest) unless the row says so.
struct Issuer<'a> {
    pki: &'a Pki,
    issued: std::cell::Cell<u32>,
}

impl Issuer<'_> {
    fn issue(&self, spec: &CertSpec) -> Result<Credential> {
        let n = self.issued.get() + 1;
        self.issued.set(n);
        self.pki.issue(&format!("xfcc-{n:02}"), spec)
    }

    fn svid(&self, id: &str) -> Result<Credential> {
        self.issue(&CertSpec::svid(id))
    }
}

fn element(hash: &str, cert: &str, uri: &str) -> String {
    format!("Hash={hash};Cert=\"{cert}\";URI={uri}")
}

fn rows(pki: &Pki, rogue_id: &str) -> Result<Vec<Row>> {
    let issuer = Issuer { pki, issued: std::cell::Cell::new(0) };
    // The rightful app's certificate, as the rogue may copy it (it is no secret).
    let app = issuer.svid(APP_ID)?;
    let a_hash = app.sha256_hex();
    let a_cert = url_encode(app.cert_pem.as_bytes());
    let a_pem_one_line: String = app.cert_pem.lines().collect();
    let truncated = a_cert.get(..a_cert.len() / 2).unwrap_or_default();
    let rightful = element(&a_hash, &a_cert, APP_ID);
    let padding = "a".repeat(HEADERS_LIMIT - 2 * 1024 - rightful.len());
    let over_limit = "a".repeat(HEADERS_LIMIT + 1024);

    let row = |name: &str, sender: Sender, credential: Credential, header: Option<Vec<u8>>| Row {
        name: name.to_owned(),
        sender,
        credential,
        listener: Listener::Strict,
        header,
        forged: Forged::Rejected,
        joins: true,
        too_large: false,
        again: false,
    };
    // A rogue with a new certificate; `header` gets its hash and URL-encoded PEM.
    let forged = |name: &str, header: &dyn Fn(&str, &str) -> String| -> Result<Row> {
        let rogue = issuer.svid(rogue_id)?;
        let header = header(&rogue.sha256_hex(), &url_encode(rogue.cert_pem.as_bytes()));
        Ok(row(name, Sender::Rogue, rogue, Some(header.into_bytes())))
    };
    let broken = |name: &str, header: &dyn Fn(&str, &str) -> String| -> Result<Row> {
        Ok(Row { joins: false, ..forged(name, header)? })
    };
    let app_with = |name: &str, header: Option<&str>| -> Result<Row> {
        Ok(row(name, Sender::App, issuer.svid(APP_ID)?, header.map(|h| h.as_bytes().to_vec())))
    };
    let injector = |name: &str, uri: String| -> Result<Row> {
        let spec = CertSpec::svid(rogue_id).with_uri_sans([uri.as_str()]);
        Ok(row(name, Sender::Injector, issuer.issue(&spec)?, None))
    };

    let own_app = issuer.svid(APP_ID)?;
    let own_element = element(&own_app.sha256_hex(), &url_encode(own_app.cert_pem.as_bytes()), APP_ID);
    let subject_app = issuer.svid(APP_ID)?;
    let subject_element = format!(
        r#"Hash={};Cert="{}";Subject="CN=x\"\;Cert=\"y,O=Foo\, Inc.";URI={APP_ID}"#,
        subject_app.sha256_hex(),
        url_encode(subject_app.cert_pem.as_bytes())
    );
    Ok(vec![
        row("rightful app, no XFCC", Sender::App, app.clone(), None),
        // Forged elements
        forged("forged: the rightful certificate, URI and hash", &|_, _| rightful.clone())?,
        forged("forged: as this proxy writes it for the app (By first)", &|_, _| {
            format!("By={APP_ID};{rightful}")
        })?,
        forged("forged: the connection's own hash, the rightful certificate", &|r_hash, _| {
            element(r_hash, &a_cert, APP_ID)
        })?,
        forged("forged: two elements, the rightful one last", &|r_hash, r_cert| {
            format!("{},{rightful}", element(r_hash, r_cert, rogue_id))
        })?,
        Row {
            forged: Forged::Own,
            ..forged("two elements, the connection's own one last", &|r_hash, r_cert| {
                format!("{rightful},{}", element(r_hash, r_cert, rogue_id))
            })?
        },
        forged("forged: 40 elements, all the rightful one", &|_, _| vec![rightful.as_str(); 40].join(","))?,
        forged("forged: upper-case keys", &|_, _| format!("HASH={a_hash};CERT=\"{a_cert}\";URI={APP_ID}"))?,
        forged("forged: the Cert key twice", &|r_hash, r_cert| {
            format!("Hash={r_hash};Cert=\"{r_cert}\";Cert=\"{a_cert}\"")
        })?,
        // Quoting
        forged("quoted values with , ; = and escaped quotes", &|_, _| {
            format!(r#"By="spiffe://x/a,b;c=d \"e\" \\";{rightful};DNS="a,b;c=\"d\"""#)
        })?,
        forged("a quoted Subject containing ;Cert=", &|r_hash, _| {
            format!("Hash={r_hash};Subject=\"CN=x;Cert={a_cert}\";URI={APP_ID}")
        })?,
        forged("a Subject whose escaped quotes hide ;Cert=", &|r_hash, _| {
            format!(r#"Hash={r_hash};Subject="\";Cert=\"{a_cert}";URI={APP_ID}"#)
        })?,
        // Well-formed: `=` may stand in an unquoted value (Envoy writes URI= that way).
        forged("an unquoted Subject with '=' before ;Cert=", &|r_hash, _| {
            format!("Hash={r_hash};Subject=CN=x;Cert=\"{a_cert}\"")
        })?,
        // Broken certificates
        forged("a truncated Cert", &|_, _| format!("Hash={a_hash};Cert=\"{truncated}\";URI={APP_ID}"))?,
        forged("a Cert not URL-encoded (PEM on one line)", &|_, _| {
            format!("Hash={a_hash};Cert=\"{a_pem_one_line}\";URI={APP_ID}")
        })?,
        broken("an unterminated quote", &|_, _| format!("Hash={a_hash};Cert=\"{a_cert}"))?,
        // Garbage and size
        forged("an empty header", &|_, _| String::new())?,
        broken("garbage", &|_, _| r#";;,,==""\"#.to_owned())?,
        Row {
            header: Some([b"By=caf\xe9;".as_slice(), rightful.as_bytes()].concat()),
            ..forged("non-UTF-8 bytes (obs-text)", &|_, _| String::new())?
        },
        forged("near Envoy's header size limit", &|_, _| format!("By=\"{padding}\";{rightful}"))?,
        Row {
            too_large: true,
            ..forged("over Envoy's header size limit", &|_, _| format!("By=\"{over_limit}\";{rightful}"))?
        },
        // No certificate at all: the filter stops before it looks for one.
        Row {
            listener: Listener::Lenient,
            ..row(
                "no certificate, forged XFCC",
                Sender::Rogue,
                app.clone(),
                Some(rightful.clone().into_bytes()),
            )
        },
        // A rogue certificate that writes XFCC syntax into this proxy's own element.
        injector(
            "a URI SAN that opens a second element with the rightful certificate",
            format!("{rogue_id},By={APP_ID};{rightful}"),
        )?,
        injector(
            "a URI SAN that adds ;Cert= with the rightful certificate",
            format!("{rogue_id};Cert=\"{a_cert}\""),
        )?,
        // The rightful app itself
        Row {
            forged: Forged::Own,
            ..row(
                "rightful app, its own true element",
                Sender::App,
                own_app.clone(),
                Some(own_element.into_bytes()),
            )
        },
        Row { again: true, ..row("the same certificate again, no XFCC", Sender::App, own_app, None) },
        // Envoy writes a Subject in RFC 2253 form, escapes and all (`\,` `\;` `\"`), inside quotes.
        Row {
            forged: Forged::Own,
            ..row(
                "rightful app, its own element with a Subject as Envoy writes it",
                Sender::App,
                subject_app,
                Some(subject_element.into_bytes()),
            )
        },
        Row { joins: false, ..app_with("rightful app, a garbage XFCC", Some(";;,,"))? },
        app_with("rightful app, no XFCC, after all of the above", None)?,
    ])
}

/// What must happen to `row` under `mode`, on an Envoy with (`property`) or without
/// `connection.peer_certificate`.
fn expected(row: &Row, mode: ForwardClientCert, property: bool, rogue_id: &str) -> Expected {
    if row.too_large {
        return Expected::EnvoyReply(431);
    }
    if row.listener == Listener::Lenient {
        return Expected::deny("no_client_certificate", None);
    }
    let unavailable = Expected::deny("certificate_unavailable", None);
    let own = match (row.sender, property) {
        (Sender::App, _) => Expected::allow("ok", Some(APP_ID)),
        (Sender::Rogue, _) => Expected::deny("principal_mismatch", Some(rogue_id)),
        (Sender::Injector, true) => Expected::deny("svid_bad_spiffe_id", None),
        (Sender::Injector, false) => unavailable.clone(),
    };
    if property {
        return own;
    }
    match (mode, &row.header) {
        (ForwardClientCert::Sanitize, _) => unavailable,
        (ForwardClientCert::SanitizeSet, _) => own,
        (ForwardClientCert::AppendForward, None) => own,
        (ForwardClientCert::AppendForward, Some(_)) => {
            if row.joins {
                own
            } else {
                unavailable
            }
        }
        (ForwardClientCert::ForwardOnly | ForwardClientCert::AlwaysForwardOnly, None) => unavailable,
        (ForwardClientCert::ForwardOnly | ForwardClientCert::AlwaysForwardOnly, Some(_)) => {
            match row.forged {
                Forged::Own => own,
                Forged::Rejected => unavailable,
            }
        }
    }
}

/// Log lines that would mean the module failed.
fn wasm_failures(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| {
            line.contains("][critical]")
                || (line.contains("][error]") && line.contains("wasm"))
                || line.contains("Uncaught")
                || line.contains("panicked")
        })
        .collect()
}

/// Runs every row against one Envoy under `mode`; `Err` when the harness itself fails.
fn spoofing_is_never_allowed(mode: ForwardClientCert) -> Result<()> {
    let version = envoy_version()?;
    let property = version.has_peer_certificate();
    let pki = Pki::generate()?;
    let rogue_id = spiffe_id("cluster.local", "demo", "db");
    let rows = rows(&pki, &rogue_id)?;
    let mut previous: Option<Expected> = None;
    let mut cases: Vec<Case> = Vec::new();
    for row in &rows {
        let want = match (&previous, row.again) {
            (Some(previous), true) => previous.clone(),
            _ => expected(row, mode, property, &rogue_id),
        };
        previous = Some(want.clone());
        let identity = match row.listener {
            Listener::Lenient => None,
            Listener::Strict => Some(&row.credential),
        };
        let case = Case::new(&row.name, identity, want).on(row.listener);
        let case = match &row.header {
            Some(header) => case.header_bytes(XFCC, header),
            None => case,
        };
        cases.push(match case.expected {
            Expected::EnvoyReply(_) => case,
            _ => case.expecting_principal(APP_ID),
        });
    }

    // One worker: the row "again" shows the certificate cache, which is per worker VM; with two
    // workers its connection may meet the other worker, which has not read that certificate
    // (and then denies it `certificate_unavailable` before 1.38, never admits more).
    // Every row checks its decision line, so the log limit must not hold any back here.
    let settings = Settings::with_plugin_config(r#"{"log_lines_per_second":10000}"#)
        .forward_client_cert(mode)
        .concurrency(1);
    let envoy = Envoy::start(&pki, &settings).map_err(|err| Error::new(err.to_string()))?;
    let wasm_before = envoy.wasm_stats()?;
    let outcomes = run_cases(&envoy, &pki, &cases)?;
    let wasm_after = envoy.wasm_stats()?;
    let log = envoy.log();

    let context =
        format!("Envoy {version} ({} path), forward_client_cert_details {mode}", version.certificate_path());
    eprintln!("{context}\n{}", report(&outcomes));
    let allowed_rogues: Vec<&str> = outcomes
        .iter()
        .zip(&rows)
        .filter(|(outcome, row)| {
            !matches!(row.sender, Sender::App)
                && outcome.observation.decision().is_some_and(|line| line.decision() == "allow")
        })
        .map(|(outcome, _)| outcome.case.name.as_str())
        .collect();
    assert!(allowed_rogues.is_empty(), "{context}: ALLOWED: {allowed_rogues:?}\n{}", report(&outcomes));
    assert!(all_as_expected(&outcomes), "{context}\n{}", report(&outcomes));
    assert_eq!(
        wasm_changes(&wasm_before, &wasm_after),
        Vec::<String>::new(),
        "{context}: Wasm stats changed"
    );
    assert_eq!(wasm_failures(&log), Vec::<&str>::new(), "{context}: Wasm failures in Envoy's log");
    Ok(())
}

/// Every Wasm stat that changed, as `name: before -> after`.
fn wasm_changes(before: &Stats, after: &Stats) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = before.0.keys().chain(after.0.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.0.get(name), after.0.get(name));
            (b != a).then(|| format!("{name}: {b:?} -> {a:?}"))
        })
        .collect()
}

#[test]
fn sanitize() {
    spoofing_is_never_allowed(ForwardClientCert::Sanitize).unwrap();
}

#[test]
fn forward_only() {
    spoofing_is_never_allowed(ForwardClientCert::ForwardOnly).unwrap();
}

#[test]
fn append_forward() {
    spoofing_is_never_allowed(ForwardClientCert::AppendForward).unwrap();
}

#[test]
fn sanitize_set() {
    spoofing_is_never_allowed(ForwardClientCert::SanitizeSet).unwrap();
}

#[test]
fn always_forward_only() {
    spoofing_is_never_allowed(ForwardClientCert::AlwaysForwardOnly).unwrap();
}

//! A model of the listener's TLS handshake, for `check --ca`: which certificates Envoy turns
//! away before the filter runs.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::cert::{PeerCertificate, TrustedCas};

/// Longer chains than any mesh uses; bounds the walk.
const MAX_CHAIN: usize = 8;

/// What the listener's TLS handshake decides on `peer`: each certificate from the leaf up is
/// within its validity at `now` and signed by the next, an intermediate from the peer's file or
/// a CA of `cas`. A simplification of BoringSSL's verification (no revocation, policies or
/// name constraints), enough to tell which certificates Envoy turns away before the filter runs.
pub fn handshake(peer: &PeerCertificate, cas: &TrustedCas, now: i64) -> Result<String, String> {
    fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, String> {
        X509Certificate::from_der(der)
            .map(|(_, cert)| cert)
            .map_err(|e| format!("{what} does not parse: {e}"))
    }
    let chain: Vec<X509Certificate<'_>> = peer
        .chain
        .iter()
        .enumerate()
        .map(|(index, der)| parse(der, &format!("certificate {} of {}", index + 1, peer.path.display())))
        .collect::<Result<_, _>>()?;
    let roots: Vec<X509Certificate<'_>> =
        cas.ders.iter().map(|der| parse(der, "a trusted CA")).collect::<Result<_, _>>()?;
    let signed_by = |cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>| {
        issuer.is_ca()
            && cert.issuer().as_raw() == issuer.subject().as_raw()
            && cert.verify_signature(Some(issuer.public_key())).is_ok()
    };
    let Some(mut current) = chain.first() else {
        return Err("no certificate".into());
    };
    for depth in 0..MAX_CHAIN {
        let which = if depth == 0 {
            "the certificate".to_owned()
        } else {
            format!("intermediate {}", current.subject())
        };
        within_validity(current, now).map_err(|e| format!("{which} {e}"))?;
        if let Some(root) = roots.iter().find(|root| signed_by(current, root)) {
            within_validity(root, now).map_err(|e| format!("the trusted CA {} {e}", root.subject()))?;
            return Ok(format!("chains to {} in {}", root.subject(), cas.path.display()));
        }
        match chain.iter().skip(1).find(|next| signed_by(current, next)) {
            Some(next) => current = next,
            None => {
                return Err(format!(
                    "{which} (issuer {}) is not signed by a CA in {}",
                    current.issuer(),
                    cas.path.display()
                ))
            }
        }
    }
    Err(format!("no trusted CA within {MAX_CHAIN} certificates"))
}

fn within_validity(cert: &X509Certificate<'_>, now: i64) -> Result<(), String> {
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        Err(format!("is not valid before {}", validity.not_before))
    } else if now > validity.not_after.timestamp() {
        Err(format!("expired at {}", validity.not_after))
    } else {
        Ok(())
    }
}

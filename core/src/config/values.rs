//! The checks of single values: list items, numbers in a range, SPIFFE IDs, exempt paths and
//! authorities. Each names the field it refuses.

use super::ConfigError;
use crate::authority::Authority;
use crate::identity::SpiffeId;

/// Checks each item of a list, naming a refused one by its index.
pub(super) fn each<T>(
    field: &str,
    items: Option<Vec<String>>,
    check: impl Fn(&str, &str) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    let items = items.unwrap_or_default().into_iter().enumerate();
    items.map(|(i, raw)| check(&format!("{field}[{i}]"), &raw)).collect()
}

/// A number in `min..=max`, as the type the policy keeps (every range fits it).
pub(super) fn number<T: TryFrom<u64>>(
    field: &str,
    value: Option<u64>,
    (min, max): (u64, u64),
) -> Result<Option<T>, ConfigError> {
    value
        .map(|n| {
            Some(n).filter(|n| (min..=max).contains(n)).and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
                ConfigError::new(field, format!("must be an integer from {min} to {max}, not {n}"))
            })
        })
        .transpose()
}

pub(super) fn spiffe_id(field: &str, raw: &str) -> Result<SpiffeId, ConfigError> {
    SpiffeId::parse(raw).map_err(|e| ConfigError::new(field, format!("{raw:?} {e}")))
}

/// An exempt path must be the one form a request can match exactly: no query, no
/// percent-encoding (a request may spell a byte either way), no empty, `.` or `..` segments, no
/// backslash. Anything else would either never match or invite a path that routes elsewhere.
pub(super) fn exempt_path(field: &str, raw: &str) -> Result<String, ConfigError> {
    let refuse = |why: &str| Err(ConfigError::new(field, format!("{raw:?} {why}")));
    if !raw.starts_with('/') {
        return refuse("must start with '/'");
    }
    // Request paths are visible ASCII (anything else is percent-encoded on the wire).
    if raw.contains(['?', '#']) || !raw.chars().all(|c| c.is_ascii_graphic()) {
        return refuse("must be a bare path of visible ASCII (no query, fragment, spaces)");
    }
    if raw.contains('%') {
        return refuse(
            "must not be percent-encoded (encoded separators and dots are refused; write the path decoded)",
        );
    }
    if raw.contains('\\') {
        return refuse("must not contain a backslash");
    }
    let segments: Vec<&str> = raw.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return refuse("must not contain '.' or '..' segments"),
            // "/" alone, and one trailing slash, are fine; "//" anywhere is not.
            "" if i != last || raw.ends_with("//") => return refuse("must not contain '//'"),
            _ => {}
        }
    }
    Ok(raw.to_owned())
}

/// `host` or `host:port` by the grammar of [`crate::authority`], kept lowercase; a request's
/// authority is compared with it after parsing both.
pub(super) fn exempt_authority(field: &str, raw: &str) -> Result<String, ConfigError> {
    match Authority::parse(raw) {
        Ok(_) => Ok(raw.to_ascii_lowercase()),
        Err(e) => {
            Err(ConfigError::new(field, format!("{raw:?} must be an authority, host or host:port: {e}")))
        }
    }
}

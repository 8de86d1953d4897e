//! A place in the parsed Envoy config, found by structure, and the few edits the tests make there.
//!
//! Every step names where it looked, so that an edit of a template that no longer has the
//! expected shape fails with the path it did not find, not by silently editing something else.

use serde_norway::{Mapping, Value};

use super::TEMPLATE;
use crate::{Error, Result};

/// A value in the config and the path that led to it (`static_resources.listeners[loopback_strict]...`).
pub(super) struct At<'a> {
    value: &'a mut Value,
    path: String,
}

impl<'a> At<'a> {
    pub(super) fn root(value: &'a mut Value) -> Self {
        At { value, path: String::new() }
    }

    fn error(&self, what: impl std::fmt::Display) -> Error {
        let path = if self.path.is_empty() { "the top level" } else { &self.path };
        Error::new(format!("{TEMPLATE}: {what} at `{path}`"))
    }

    fn child(path: &str, step: &str) -> String {
        if path.is_empty() || step.starts_with('[') {
            format!("{path}{step}")
        } else {
            format!("{path}.{step}")
        }
    }

    pub(super) fn mapping(self) -> Result<&'a mut Mapping> {
        let err = self.error("expected a mapping");
        self.value.as_mapping_mut().ok_or(err)
    }

    pub(super) fn sequence(self) -> Result<&'a mut Vec<Value>> {
        let err = self.error("expected a sequence");
        self.value.as_sequence_mut().ok_or(err)
    }

    /// The field `key` of this mapping.
    pub(super) fn key(self, key: &str) -> Result<At<'a>> {
        let path = Self::child(&self.path, key);
        let err = self.error(format!("no `{key}`"));
        let value = self.mapping()?.get_mut(key).ok_or(err)?;
        Ok(At { value, path })
    }

    /// The one element of this sequence.
    pub(super) fn only(self) -> Result<At<'a>> {
        let path = Self::child(&self.path, "[0]");
        let err =
            |found: usize| Error::new(format!("{TEMPLATE}: expected one element at `{path}`, found {found}"));
        match self.sequence()?.as_mut_slice() {
            [value] => Ok(At { value, path }),
            other => Err(err(other.len())),
        }
    }

    /// The one element of this sequence whose `name` is `name`.
    pub(super) fn named(self, name: &str) -> Result<At<'a>> {
        let path = Self::child(&self.path, &format!("[{name}]"));
        let err = |found: usize| {
            Error::new(format!("{TEMPLATE}: expected one element named `{name}` at `{path}`, found {found}"))
        };
        let mut matching: Vec<&mut Value> = self
            .sequence()?
            .iter_mut()
            .filter(|element| element.get("name").and_then(Value::as_str) == Some(name))
            .collect();
        let found = matching.len();
        match (matching.pop(), found) {
            (Some(value), 1) => Ok(At { value, path }),
            _ => Err(err(found)),
        }
    }

    /// This sequence, if its first element's `name` is `name`.
    pub(super) fn starting_with(self, name: &str) -> Result<&'a mut Vec<Value>> {
        let err = self.error(format!("expected a sequence whose first element is named `{name}`"));
        let sequence = self.sequence()?;
        match sequence.first().and_then(|first| first.get("name")).and_then(Value::as_str) {
            Some(found) if found == name => Ok(sequence),
            _ => Err(err),
        }
    }

    /// This mapping, if its `name` is `name`.
    pub(super) fn with_name(self, name: &str) -> Result<At<'a>> {
        match self.value.get("name").and_then(Value::as_str) {
            Some(found) if found == name => Ok(self),
            found => Err(self.error(format!("expected the name `{name}`, found {found:?}"))),
        }
    }

    /// This value, if it is `expected`.
    pub(super) fn expect(self, expected: &Value) -> Result<At<'a>> {
        if self.value != expected {
            return Err(self.error(format!("expected {}, found {}", inline(expected), inline(self.value))));
        }
        Ok(self)
    }

    /// Replaces this value, which must be `expected`.
    pub(super) fn replace(self, expected: &Value, new: Value) -> Result<()> {
        *self.expect(expected)?.value = new;
        Ok(())
    }

    /// Adds the field `key` to this mapping, which must not have it yet.
    pub(super) fn insert_new(self, key: &str, value: Value) -> Result<()> {
        let err = self.error(format!("already a `{key}`"));
        let mapping = self.mapping()?;
        if mapping.contains_key(key) {
            return Err(err);
        }
        mapping.insert(Value::from(key), value);
        Ok(())
    }

    /// Removes the field `key` of this mapping and returns it.
    pub(super) fn remove(self, key: &str) -> Result<Value> {
        let err = self.error(format!("no `{key}`"));
        self.mapping()?.shift_remove(key).ok_or(err)
    }
}

/// A value on one line, for error messages.
fn inline(value: &Value) -> String {
    serde_norway::to_string(value).map(|text| text.trim_end().replace('\n', " ")).unwrap_or_default()
}

/// A mapping from `pairs`, in that order.
pub(super) fn mapping<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(key, value)| (Value::from(key), value)).collect())
}

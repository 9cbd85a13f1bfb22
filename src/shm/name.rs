//! Segment names: what a user may call a topic, a service or a queue.

use crate::error::OpenError;

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Checks that `name` can be used as a segment name.
///
/// A name is 1 to 200 characters from `[A-Za-z0-9_-]`. That rules out path separators,
/// `.` and `..`, hidden files and anything the shell or the file system would treat specially, so a
/// name can never reach outside the ringbus root directory.
///
/// ```
/// assert!(ringbus::validate_name("prices-eu_1").is_ok());
/// assert!(ringbus::validate_name("../etc/passwd").is_err());
/// assert!(ringbus::validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), OpenError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(OpenError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_traversal_and_odd_characters() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/abs", "a b", "a.b", "é", "a\0b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(validate_name("Topic_1-x").is_ok());
    }
}

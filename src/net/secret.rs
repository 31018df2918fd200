//! `Secret`: a string that never prints itself (AccessKey secrets, STS tokens, signed URLs).
//!
//! `Debug` and `Display` both render `******`, so a secret inside any struct that derives
//! `Debug`, any error message or any `tracing` field stays masked. The value is reached only
//! through [`Secret::expose`], which makes every use visible in review.

use std::fmt;

/// A secret string. Cloning is cheap enough for the few places that need it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

/// What every secret renders as.
pub const MASK: &str = "******";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call it only where the value is put on the wire or hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_mask_the_value() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), MASK);
        assert_eq!(format!("{secret}"), MASK);
        assert_eq!(
            format!("{:?}", Some(secret.clone())),
            format!("Some({MASK})")
        );
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}

//! Ids as types: a trial's id and a worker's id are not interchangeable strings, and a lease
//! is named by a [`LeaseRef`], not a `(String, u32)`.
//!
//! Each id derefs to `str` and borrows as `str`, so maps keyed by ids are looked up with a
//! plain `&str` and ids print as the text they are.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> $name {
                $name(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> $name {
                $name(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> $name {
                $name(id.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == &other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

id_type!(
    /// A trial's id: the first 16 hex digits of the SHA-256 of its canonical TOML, so the same
    /// configuration has the same id in every sweep and on every machine.
    TrialId
);

id_type!(
    /// A registered worker's id: `NAME-<16 hex digits>`, never reused while the database lives.
    WorkerId
);

impl TrialId {
    /// The id of a configuration: the first 16 hex digits of the SHA-256 of its canonical TOML.
    pub fn of(spec: &crate::TrialSpec) -> TrialId {
        let mut id = crate::sha256_hex(spec.to_toml().as_bytes());
        id.truncate(16);
        TrialId(id)
    }
}

/// One lease: a trial and the attempt number it was leased with. Progress, results,
/// checkpoints and heartbeats name the lease they are about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseRef {
    pub trial: TrialId,
    pub attempt: u32,
}

impl std::fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} attempt {}", self.trial, self.attempt)
    }
}

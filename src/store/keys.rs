//! Typed keys and decoded JSON columns: a tenant id cannot be passed where a
//! job id is expected, and JSON objects are read once, where rows are decoded.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode};

macro_rules! key {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
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
    };
}

key!(
    /// An inbox event's id (the envelope's `id`, or one given at ingestion).
    EventId
);
key!(
    /// A tenant's id, as the control plane names it.
    TenantId
);
key!(
    /// A job's id (ours, not the backend's: see `JobRecord::external_id`).
    JobId
);

/// A JSON object column (tenant params and outputs, job params and outputs),
/// decoded when its row is read. NULL, or a column that does not hold an
/// object, decodes as empty: these are written only by the store itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonObject(pub Map<String, Value>);

impl JsonObject {
    /// The column's text.
    pub fn to_text(&self) -> String {
        // A map with string keys always serializes.
        serde_json::to_string(&self.0).unwrap_or_else(|_| String::from("{}"))
    }

    /// The values that are strings (a job's environment), others left out.
    pub fn strings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
    }
}

impl<DB: Database> sqlx::Type<DB> for JsonObject
where
    String: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for JsonObject
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        self.to_text().encode(buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for JsonObject
where
    Option<String>: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<Option<String>>::decode(value)?
            .map(Self::from)
            .unwrap_or_default())
    }
}

impl From<String> for JsonObject {
    fn from(text: String) -> Self {
        Self::from(text.as_str())
    }
}

impl From<&str> for JsonObject {
    fn from(text: &str) -> Self {
        Self(serde_json::from_str(text).unwrap_or_default())
    }
}

impl From<Map<String, Value>> for JsonObject {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

impl Deref for JsonObject {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for JsonObject {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, Value)> for JsonObject {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

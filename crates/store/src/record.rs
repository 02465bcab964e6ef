//! The kinds of rows the store keeps.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::StoreError;

/// One probe result: what a prober returned for one run of a check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ResultRecord {
    /// Row id, assigned by the store on append (ignored there); `Some` on every record read back.
    pub id: Option<i64>,
    /// Name of the check, as in the config.
    pub check: String,
    /// When the probe started, Unix epoch milliseconds.
    pub started_at_ms: i64,
    /// Whether the probe succeeded (after conditions were evaluated).
    pub success: bool,
    /// Why it failed, as the kebab-case reason users see (e.g. `"connection-refused"`);
    /// `None` on success.
    pub reason: Option<String>,
    /// Human-readable one-line summary.
    pub message: String,
    /// Total probe duration in seconds. Must be finite (checked on append).
    pub duration_seconds: f64,
    /// Phases, kind-specific details and condition results; opaque to the store, kept as JSON
    /// text.
    pub details: Json,
}

/// A JSON document kept as its text.
///
/// A result's details are written for every probe (10,000 a second in large setups) but read
/// rarely, so they are serialised once where the record is made and stay one compact string on the
/// way to the database, instead of a tree of maps and strings queued in the writer.
///
/// Serialising a `Json` (e.g. in an API response) emits the document itself, not a string, with
/// object keys in sorted order exactly as `serde_json::Value` does, whatever the order in the
/// text. Equality compares the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json(String);

impl Json {
    /// Serialises `value` to its JSON text.
    ///
    /// Errors: what `serde_json::to_string` returns (a map with non-string keys, or a `Serialize`
    /// implementation that fails).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(Json)
    }

    /// Takes `text` after checking that it is one JSON document.
    ///
    /// Errors: the parse error of `text`.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Json(text))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document parsed into a `serde_json::Value`.
    ///
    /// Errors: none for a `Json` built through this API (the text is valid by construction); the
    /// parse error otherwise.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Self {
        // `Value`'s Display is its compact serialisation, which cannot fail.
        Json(value.to_string())
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through `Value` so the output (key order included) is what a `Value` field produced.
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(Json::from)
    }
}

/// A state change of a check (kubelet-style thresholds crossed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EventRecord {
    /// Row id, assigned by the store on append (ignored there); `Some` on every record read back.
    pub id: Option<i64>,
    /// Name of the check, as in the config.
    pub check: String,
    /// When the state changed, Unix epoch milliseconds.
    pub at_ms: i64,
    /// State before: `"unknown"`, `"healthy"` or `"unhealthy"` (not validated by the store).
    pub from_state: String,
    /// State after, same vocabulary as `from_state`.
    pub to_state: String,
    /// Human-readable explanation of the change.
    pub message: String,
    /// The results that caused the change; opaque to the store, kept as JSON text.
    pub results: serde_json::Value,
}

/// A diagnosis `netprobe run` took when a check turned unhealthy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DiagnosisRecord {
    /// Row id, assigned by the store on append (ignored there); `Some` on every record read back.
    pub id: Option<i64>,
    /// Name of the check, as in the config.
    pub check: String,
    /// When the diagnosis was finished, Unix epoch milliseconds.
    pub at_ms: i64,
    /// The overall answer (`healthy`, `explained`, `unexplained`; not validated by the store).
    pub conclusion: String,
    /// The finding ids (kebab-case), in the diagnosis' order.
    pub finding_ids: Vec<String>,
    /// The whole diagnosis; opaque to the store, kept as JSON text.
    pub diagnosis: Json,
}

/// Consecutive rounds of one mesh pair (source agent → target address), written by `netprobe
/// run`'s mesh as one row (table `mesh_chunks`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MeshChunkRecord {
    /// Row id, assigned by the store on append (ignored there); `Some` on every record read back.
    pub id: Option<i64>,
    /// The observing agent's node name.
    pub source_node: String,
    /// The peer's node name.
    pub target_node: String,
    /// The peer address probed, as text.
    pub target_ip: String,
    /// When the chunk's first round started, Unix epoch milliseconds.
    pub first_ms: i64,
    /// When its last round started, Unix epoch milliseconds (pruning compares this).
    pub last_ms: i64,
    /// How many rounds `data` holds (at least 1).
    pub rounds: u32,
    /// The rounds, encoded by the writer; opaque to the store.
    pub data: Vec<u8>,
}

impl ResultRecord {
    /// Checks that the record can be stored faithfully.
    ///
    /// Errors: [`StoreError::InvalidRecord`] if `duration_seconds` is NaN or infinite (SQL has no
    /// portable representation: SQLite turns NaN into NULL, PostgreSQL's `NaN` is not standard).
    pub fn validate(&self) -> Result<(), StoreError> {
        if !self.duration_seconds.is_finite() {
            return Err(StoreError::InvalidRecord {
                check: self.check.clone(),
                detail: format!(
                    "duration_seconds is {} (must be finite)",
                    self.duration_seconds
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Doc {
        zeta: u32,
        alpha: &'static str,
        nested: Nested,
    }

    #[derive(Serialize)]
    struct Nested {
        b: f64,
        a: Vec<u8>,
    }

    fn doc() -> Doc {
        Doc {
            zeta: 7,
            alpha: "héllo ✓ \"quoted\"",
            nested: Nested {
                b: 0.0005,
                a: vec![1, 2],
            },
        }
    }

    #[test]
    fn serialises_exactly_as_the_value_it_encodes() {
        // A `Value` field used to carry the details: API output must not change.
        let as_value = serde_json::to_string(&serde_json::to_value(doc()).unwrap()).unwrap();
        let encoded = Json::encode(&doc()).unwrap();
        assert_eq!(serde_json::to_string(&encoded).unwrap(), as_value);
        // The text keeps the struct's order; only serialisation sorts.
        assert!(
            encoded.as_str().starts_with("{\"zeta\":7"),
            "{}",
            encoded.as_str()
        );
        assert_eq!(
            serde_json::to_string(&Json::from(json!({"b": 1, "a": [true, null]}))).unwrap(),
            r#"{"a":[true,null],"b":1}"#
        );
    }

    #[test]
    fn round_trips_through_serde_inside_a_record() {
        let r = ResultRecord {
            id: Some(3),
            check: "web".to_owned(),
            started_at_ms: 1,
            success: true,
            reason: None,
            message: "ok".to_owned(),
            duration_seconds: 0.5,
            details: Json::encode(&doc()).unwrap(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""details":{"alpha":"#), "{text}");
        let back: ResultRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.details.to_value().unwrap(),
            r.details.to_value().unwrap()
        );
        assert_eq!(
            back.details.as_str(),
            serde_json::to_string(&r.details).unwrap()
        );
    }

    #[test]
    fn from_text_accepts_one_document_and_rejects_anything_else() {
        let j = Json::from_text("{\"a\": [1, 2]}".to_owned()).unwrap();
        assert_eq!(j.as_str(), "{\"a\": [1, 2]}");
        assert_eq!(j.to_value().unwrap(), json!({"a": [1, 2]}));
        for bad in ["{not json", "", "{} {}", "[1,"] {
            assert!(Json::from_text(bad.to_owned()).is_err(), "{bad:?}");
        }
    }
}

/// One `netprobe isolate` or `netprobe release`: who cut (or restored) which namespace's network,
/// when, why, and the exact rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct IsolationRecord {
    /// Row id, assigned by the store on append (ignored there); `Some` on every record read back.
    pub id: Option<i64>,
    /// `isolate` or `release` (not validated by the store).
    pub action: String,
    /// The namespace as named on the command line: `netns NAME` or `pid N`.
    pub netns: String,
    /// When the rules were applied, Unix epoch milliseconds.
    pub at_ms: i64,
    /// The user who ran the command (`$SUDO_USER` or `$USER`, with the uid).
    pub who: String,
    /// `--reason`, empty if none was given.
    pub reason: String,
    /// The exact `iptables-restore` payloads applied, keyed by the restore program; JSON text.
    pub rules: Json,
    /// Everything else (backend, exceptions, impact report); opaque to the store, JSON text.
    pub details: Json,
}

//! The two kinds of rows the store keeps.

use serde::{Deserialize, Serialize};

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
    pub details: serde_json::Value,
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

//! Integration tests of the store against real SQLite files in temporary directories.
//!
//! One test binary (ripgrep's layout) so sqlx is linked once; the crash test re-executes this
//! binary to run its child half.

#![allow(
    clippy::unwrap_used,
    reason = "in a test a panic is the failure report"
)]

mod common;
mod corrupt;
mod crash;
mod diagnoses;
mod isolations;
mod mesh;
mod prune;
mod roundtrip;
mod writer;

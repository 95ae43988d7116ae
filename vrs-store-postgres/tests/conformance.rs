//! The vrs store conformance suite (vrs-core's, unchanged) against a real PostgreSQL
//! server, once per layout; every case on a schema of its own, so cases run in parallel.

mod common;

use common::fresh_store;
use vrs_store_postgres::Layout;

/// Plain tables (migrations/).
mod plain {
    use super::*;
    vrs_core::store_conformance_tests!(|case| async move { fresh_store(&format!("p_{case}"), Layout::Plain).await });
}

/// The big tables hash-partitioned by municipality (migrations/partitioned/).
mod partitioned {
    use super::*;
    vrs_core::store_conformance_tests!(|case| async move { fresh_store(&format!("h_{case}"), Layout::Partitioned).await });
}

//! vrs-core: the domain of the vaccination record system (ワクチン接種記録システム).
//!
//! Pure: no I/O, no database, no async runtime. Stores implement
//! [`store::StoreBackend`]; the [`service::Registry`] reads through it, decides with pure
//! functions ([`reconcile`], [`access`]) and hands the store one [`store::ChangeSet`] per
//! operation, which the store applies atomically.

pub mod access;
pub mod changelog;
pub mod clock;
pub mod columns;
pub mod credentials;
pub mod dose;
pub mod era;
pub mod error;
pub mod fhir;
pub mod finding;
pub mod generate;
pub mod hl7;
pub mod ids;
pub mod import;
pub mod interchange;
pub mod ledger;
pub mod municipalities;
pub mod opendata;
pub mod reconcile;
pub mod resident;
pub mod scan;
pub mod service;
pub mod stats;
pub mod store;
pub mod sync;
pub mod text;
pub mod vaccine;

pub use error::Error;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store conformance suite (feature `testing`): the store contract, and the macro
/// [`store_conformance_tests!`] every store crate runs it with.
#[cfg(feature = "testing")]
pub mod testing;
/// Service-level cases of the store conformance suite (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing_service;
/// Sync-batch cases of the store conformance suite (feature `testing`).
#[cfg(feature = "testing")]
pub mod testing_sync;

//! The confidence indicator of each asset and service.
//!
//! After the drift policy has scored each asset and the failure model has
//! predicted its failure probability, the engine passes both to a
//! [`ConfidenceBook`] once per tick. For each asset and each service the book
//! computes
//!
//! ```text
//! instant  = baseline × Π over assets (1 − drift_score) × (1 − failure_probability)
//! smoothed = smoothing × smoothed_previous + (1 − smoothing) × instant
//! ```
//!
//! starting from 1, with `smoothing` 0.7 and `baseline` 1 by default. The
//! instantaneous value starts from the baseline in every tick, never from the
//! previous smoothed value. Starting from the previous value would make
//! confidence a ratchet that only falls: with zero drift and zero risk it
//! would stay wherever it was. A service is also bounded by the lowest
//! confidence of its direct dependencies, updated first in
//! [`topological_order`]. The [`ConfidenceReport`] names, for each service
//! below the threshold, the asset that lowered it most, which the
//! remediation step acts on.
//!
//! ```
//! use umbra_host::confidence::{ConfidenceBook, ConfidenceConfig, ServiceSpec, TickInputs};
//!
//! let services = [
//!     ServiceSpec { name: "db".into(), assets: vec!["pg".into()], depends_on: vec![] },
//!     ServiceSpec { name: "api".into(), assets: vec!["app".into()], depends_on: vec!["db".into()] },
//! ];
//! let mut book = ConfidenceBook::new(ConfidenceConfig::default(), &services)?;
//!
//! let failing = TickInputs::default().with("pg", 0.9, 0.8).with("app", 0.0, 0.0);
//! let mut report = book.update(&failing);
//! for _ in 0..3 {
//!     report = book.update(&failing);
//! }
//!
//! // The api's own assets are fine, but it is capped by the failing database.
//! let api = report.service("api").expect("api is in the book");
//! assert!(api.smoothed > 0.99);
//! assert!(api.below_threshold);
//! let db = report.service("db").expect("db is in the book");
//! assert_eq!(db.culprit.as_ref().map(|c| c.asset.as_str()), Some("pg"));
//! # Ok::<(), umbra_host::confidence::BookError>(())
//! ```

mod book;
mod config;
mod indicator;
mod report;
mod topology;

pub use book::{BookError, ConfidenceBook, ServiceSpec, TickInputs};
pub use config::{ConfidenceConfig, ConfigError};
pub use indicator::{
    AssetRisk, INITIAL_CONFIDENCE, Indicator, InputIssue, RiskField, instant_confidence,
};
pub use report::{AssetConfidence, ConfidenceReport, Culprit, DependencyBound, ServiceConfidence};
pub use topology::{CycleError, topological_order};

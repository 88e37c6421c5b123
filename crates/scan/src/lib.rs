//! Security scanning inside the registry: joins `entrepot-inventory` (what an image has installed, read from
//! its layers) and `entrepot-vuln` (OSV advisories and matching) over the `Registry` service.
//!
//! - [`store`]: results per manifest digest behind the [`ScanStore`] trait ([`SqliteScanStore`] today,
//!   `scan.db` in the data directory; PostgreSQL can come later behind the same trait).
//! - [`scanner`]: the [`Scanner`] — background scans after each push (an event sink that enqueues, bounded
//!   workers, a start-up sweep of manifests without a result), on-demand scans, SBOM referrers, re-matching
//!   after an advisory import ([`rematch_all`]), reports and the pull gate.
//! - [`report`]: the JSON report and the table; [`sbom`]: SPDX 2.3 and CycloneDX 1.5 documents;
//!   [`policy`]: the pull policy (block at a severity per repository pattern, allow-lists).
//! - [`reader`]: layer blobs streamed from the registry into the synchronous inventory reader.
//!
//! Layers are read only through `Registry::read_blob`, never from the blob store's files; nothing here knows
//! HTTP. Layer reading and matching are blocking work and run on blocking threads.

pub mod policy;
pub mod reader;
pub mod report;
pub mod sbom;
pub mod scanner;
pub mod store;

pub use entrepot_vuln::{AdvisoryDb, Severity};
pub use policy::{PolicyRule, PullPolicy, Refusal, Unscanned, parse_severity};
pub use report::{Report, Summary};
pub use scanner::{RematchSummary, ReportState, ScanError, ScanSettings, Scanner, queries, rematch_all};
pub use store::{RecordKind, ScanRecord, ScanStore, SqliteScanStore, StoreError};

//! How far a long admin operation (a CSV import, a restore) has got: the
//! operation reports, the admin API streams the reports to a client that
//! asks for them, and the CLI draws them as a progress bar.

use serde::{Deserialize, Serialize};

/// A stage of a long operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Rows or records checked against the file and the store.
    Checking,
    /// Record changes applied in the store's transaction.
    Writing,
}

impl Stage {
    /// Its name, as a progress bar shows it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Checking => "checking",
            Stage::Writing => "writing",
        }
    }
}

/// Where reports go: the stage, the items done and the items in all.
pub type Report<'a> = &'a dyn Fn(Stage, usize, usize);

/// For callers nobody watches.
pub fn silent(_: Stage, _: usize, _: usize) {}

/// One line of a streamed answer (`application/x-ndjson`): reports, then
/// the answer itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// A report.
    Progress {
        /// The stage.
        stage: Stage,
        /// Items done in it.
        done: usize,
        /// Items in it.
        total: usize,
    },
    /// The end: the HTTP status the answer would have had, and its body.
    Answer {
        /// The status.
        status: u16,
        /// The JSON body.
        answer: serde_json::Value,
    },
}

/// The media type of a streamed answer.
pub const NDJSON: &str = "application/x-ndjson";

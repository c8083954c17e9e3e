//! The `[store]` section of the daemon's config. Parsed with `deny_unknown_fields` so that a
//! misspelt key is an error, not a silently ignored default; then [`StoreConfig::validate`]
//! collects every problem at once.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where and how records are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file. Its directory must exist; `-wal` and `-shm` files sit beside it.
    #[serde(default)]
    pub path: PathBuf,
    /// Records the hot path may hand over before `submit` reports the queue full. At ~400 bytes
    /// a record, the default 65,536 holds a few minutes of a provincial peak in ~25 MiB.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Records committed in one transaction at most. One fsync per transaction, so larger
    /// batches mean fewer fsyncs under load.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the writer waits for more records after the first before committing. This is
    /// the added acknowledgement latency at low load; at high load batches fill before it ends.
    #[serde(default = "default_max_batch_wait_ms")]
    pub max_batch_wait_ms: u64,
    /// How long a connection waits for another's write lock (the outbox's updates, a reader's
    /// checkpoint) before failing with `SQLITE_BUSY`.
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    /// A caller who hangs up unanswered after waiting at least this long gets a callback work
    /// order; 0 turns that off.
    #[serde(default = "default_callback_after_abandon_s")]
    pub callback_after_abandon_s: u64,
    /// This switchboard's name in work-order ids (`WO-<node>-…`); the two nodes of an HA pair
    /// need different names.
    #[serde(default = "default_node")]
    pub node: String,
    /// Retries of deliveries to sub-centers.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The HA pair's shared PostgreSQL database (`postgresql://user@host:port/db`). When set,
    /// every record goes there and `path` is not used; unset, the embedded SQLite file is the
    /// store (a single node).
    #[serde(default)]
    pub postgres_url: Option<String>,
}

/// Backoff of outbox deliveries: `initial_backoff_ms · 2^(attempt-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Wait after the first failure.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// The longest wait between two attempts: after an outage, the sub-center gets its first
    /// item at most this long after it is back, and the rest right after.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

fn default_callback_after_abandon_s() -> u64 {
    30
}
fn default_node() -> String {
    "a".into()
}
fn default_queue_capacity() -> usize {
    65_536
}
fn default_max_batch() -> usize {
    256
}
fn default_max_batch_wait_ms() -> u64 {
    10
}
fn default_busy_timeout_ms() -> u64 {
    5_000
}
fn default_initial_backoff_ms() -> u64 {
    1_000
}
fn default_max_backoff_ms() -> u64 {
    300_000
}

impl StoreConfig {
    /// A config with every default, for `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            queue_capacity: default_queue_capacity(),
            max_batch: default_max_batch(),
            max_batch_wait_ms: default_max_batch_wait_ms(),
            busy_timeout_ms: default_busy_timeout_ms(),
            callback_after_abandon_s: default_callback_after_abandon_s(),
            node: default_node(),
            outbox: OutboxConfig::default(),
            postgres_url: None,
        }
    }

    /// Every problem with the values, not just the first, so one edit fixes them all.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() && self.postgres_url.is_none() {
            problems.push(ConfigProblem::EmptyPath);
        }
        if self.node.is_empty() || !self.node.bytes().all(|b| b.is_ascii_alphanumeric()) {
            problems.push(ConfigProblem::BadNode(self.node.clone()));
        }
        if self.queue_capacity == 0 {
            problems.push(ConfigProblem::Zero("queue_capacity"));
        }
        if self.max_batch == 0 {
            problems.push(ConfigProblem::Zero("max_batch"));
        }
        if self.outbox.initial_backoff_ms == 0 {
            problems.push(ConfigProblem::Zero("outbox.initial_backoff_ms"));
        }
        if self.outbox.max_backoff_ms < self.outbox.initial_backoff_ms {
            problems.push(ConfigProblem::BackoffCapBelowInitial {
                initial_ms: self.outbox.initial_backoff_ms,
                max_ms: self.outbox.max_backoff_ms,
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

/// One thing wrong with a [`StoreConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// `path` is empty.
    #[error("store.path is empty")]
    EmptyPath,
    /// A count or duration that must be positive is zero.
    #[error("store.{0} must be greater than zero")]
    Zero(&'static str),
    /// The node name is empty or not plain letters and digits.
    #[error("store.node `{0}` must be letters and digits (it goes into work-order ids)")]
    BadNode(String),
    /// The backoff cap is below the first backoff.
    #[error("store.outbox.max_backoff_ms ({max_ms}) is below initial_backoff_ms ({initial_ms})")]
    BackoffCapBelowInitial {
        /// The first backoff.
        initial_ms: u64,
        /// The cap.
        max_ms: u64,
    },
}

/// Every problem [`StoreConfig::validate`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_validate() {
        let c: StoreConfig = toml::from_str(r#"path = "/var/lib/switchboard/store.db""#).unwrap();
        assert_eq!(c, StoreConfig::new("/var/lib/switchboard/store.db"));
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<StoreConfig>("path = \"x\"\nqueue_capacty = 3\n").unwrap_err();
        assert!(e.to_string().contains("queue_capacty"), "{e}");
        let e = toml::from_str::<StoreConfig>("path = \"x\"\n[outbox]\nmax_backof_ms = 3\n")
            .unwrap_err();
        assert!(e.to_string().contains("max_backof_ms"), "{e}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let c: StoreConfig = toml::from_str(
            "path = \"\"\nqueue_capacity = 0\nmax_batch = 0\n[outbox]\ninitial_backoff_ms = 10\nmax_backoff_ms = 5\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.0,
            vec![
                ConfigProblem::EmptyPath,
                ConfigProblem::Zero("queue_capacity"),
                ConfigProblem::Zero("max_batch"),
                ConfigProblem::BackoffCapBelowInitial {
                    initial_ms: 10,
                    max_ms: 5
                },
            ]
        );
    }
}

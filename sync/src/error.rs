//! The error type of the sync library.

use std::time::Duration;

/// Everything that can go wrong talking to the central database.
///
/// [`SyncError::is_transient`] tells a retry loop whether waiting can help.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The connection string does not parse.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),

    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL: {message}")]
    Connect {
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A statement failed (or the connection broke while it ran).
    #[error("{op}: {message}")]
    Db {
        op: &'static str,
        message: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// No answer within the operation timeout; the connection is dropped.
    #[error("{op}: no answer from PostgreSQL within {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },

    /// A migration that was applied differs from the one compiled in.
    #[error(
        "migration {version} ({name}) differs from the one applied to this database \
         (checksum {applied} there, {expected} here): applied migrations must never change"
    )]
    MigrationChanged {
        version: i32,
        name: &'static str,
        applied: String,
        expected: String,
    },

    /// The caller could not record an event the server refused (see
    /// [`crate::SyncClient::write_events_isolating`]); the cursor did not
    /// pass it.
    #[error("dead-letter store: {0}")]
    DeadLetter(String),

    /// A value that cannot be stored (e.g. a cursor beyond the bigint range).
    #[error("{what} {value} cannot be stored: {why}")]
    OutOfRange {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

/// SQLSTATE classes and codes after which the same request can succeed later.
fn transient_sqlstate(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources (too many
    // connections, disk full, out of memory); 57P01/02/03: the server is
    // shutting down, crashed or is starting; 40001/40P01: serialization
    // failure, deadlock (retry the transaction); 55P03: lock not available;
    // 57014: query cancelled (e.g. statement_timeout).
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03" | "57014"
        )
}

/// SQLSTATE classes and codes that refuse a request for what it carries: the
/// same rows will be refused again however long one waits, while other rows
/// may pass. 22: data exception (22P05 untranslatable character, 22021
/// invalid byte sequence, 22003 numeric out of range, …); 23: integrity
/// constraint violation (23514 check, 23502 not null, 23505 unique, …); 54:
/// program limit exceeded (a value or row too large).
fn content_sqlstate(code: &str) -> bool {
    code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
}

/// The steps of an event write that carry the rows themselves: a content
/// error there is about a row (a deferred constraint fails at commit).
/// Content errors elsewhere (the cursor update, partition maintenance) are
/// not any row's fault, and bisecting would wrongly blame every row.
pub(crate) const OP_COPY_ROW: &str = "write events: COPY row";
pub(crate) const OP_FINISH_COPY: &str = "write events: finish COPY";
pub(crate) const OP_INSERT: &str = "write events: insert";
pub(crate) const OP_COMMIT: &str = "write events: commit";

/// A one-line description: tokio-postgres prints only "db error" for server
/// errors, the useful part is in the `DbError`.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(" (");
                s.push_str(d);
                s.push(')');
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}

impl SyncError {
    pub(crate) fn db(op: &'static str, source: tokio_postgres::Error) -> Self {
        SyncError::Db {
            op,
            message: describe(&source),
            source,
        }
    }

    pub(crate) fn connect(source: tokio_postgres::Error) -> Self {
        SyncError::Connect {
            message: describe(&source),
            source,
        }
    }

    /// True when retrying the same request later may succeed: the server is
    /// unreachable, restarting, overloaded, or the transaction lost a race.
    /// False for errors that will repeat (bad URL, changed migration, a value
    /// the schema rejects).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Connect { .. } | SyncError::Timeout { .. } => true,
            SyncError::Db { source, .. } => match source.code() {
                Some(state) => transient_sqlstate(state.code()),
                // No SQLSTATE: an I/O error or a closed connection.
                None => true,
            },
            SyncError::InvalidUrl(_)
            | SyncError::MigrationChanged { .. }
            | SyncError::OutOfRange { .. }
            | SyncError::DeadLetter(_) => false,
        }
    }

    /// True when the server refused the request for its content (a value it
    /// cannot store, a constraint the rows break): retrying the same rows can
    /// never succeed, but a subset without the offending row can. The sync
    /// driver bisects such a batch instead of retrying it.
    pub fn is_content(&self) -> bool {
        match self {
            SyncError::Db { source, .. } => source
                .code()
                .is_some_and(|state| content_sqlstate(state.code())),
            _ => false,
        }
    }

    /// True when an event write was refused for the content of its rows:
    /// [`is_content`](Self::is_content), raised while the rows were copied,
    /// inserted or committed (not by the cursor update or partition
    /// maintenance, which no row can be blamed for).
    pub fn is_row_content(&self) -> bool {
        match self {
            SyncError::Db { op, .. } => {
                self.is_content()
                    && [OP_COPY_ROW, OP_FINISH_COPY, OP_INSERT, OP_COMMIT].contains(op)
            }
            _ => false,
        }
    }

    /// The server's own message (without SQLSTATE, severity or detail), if
    /// this is a server error.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            SyncError::Db { source, .. } | SyncError::Connect { source, .. } => {
                source.as_db_error().map(|db| db.message())
            }
            _ => None,
        }
    }

    /// The SQLSTATE of a server error, if there is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            SyncError::Db { source, .. } | SyncError::Connect { source, .. } => {
                source.code().map(|c| c.code())
            }
            _ => None,
        }
    }
}

pub type Result<T, E = SyncError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_sorted_into_transient_and_permanent() {
        for c in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01",
        ] {
            assert!(transient_sqlstate(c), "{c}");
        }
        for c in ["23505", "23514", "42P01", "22003", "42601"] {
            assert!(!transient_sqlstate(c), "{c}");
        }
        // Refused for the rows' content: bisected, never retried as is.
        for c in [
            "22P05", "22021", "22003", "23514", "23502", "23505", "54000",
        ] {
            assert!(content_sqlstate(c) && !transient_sqlstate(c), "{c}");
        }
        // Neither: a broken schema or statement is not the rows' fault.
        for c in [
            "08006", "40001", "40P01", "57P01", "53300", "42P01", "42601",
        ] {
            assert!(!content_sqlstate(c), "{c}");
        }
    }
}

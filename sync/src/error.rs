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
            | SyncError::OutOfRange { .. } => false,
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
    }
}

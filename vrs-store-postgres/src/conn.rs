//! The store's connections: a small pool of its own. sqlx's pool makes a round trip to the
//! server (a `Sync`) every time a connection goes back to it; the store's calls are mostly
//! one statement each, so that doubled the round trips of a registration. Here a
//! connection goes back as it is, unless a call on it failed in a way that may have left
//! it broken (an I/O or protocol error), in which case it is closed.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSeverity};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};
use vrs_core::Result;

use crate::error::{map, storage_message};

/// Whether a connection that returned this error can be used again: yes for an error the
/// server reported about a statement (a constraint, a guard, bad input) or one found
/// decoding a row; no for a lost or broken connection, and no for the server's own fatal
/// errors (a backend terminated by an administrator, a server shutting down).
pub(crate) fn leaves_connection_usable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let fatal =
                d.try_downcast_ref::<PgDatabaseError>().is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            let class = d.code().map(|c| c.chars().take(2).collect::<String>()).unwrap_or_default();
            !fatal && !matches!(class.as_str(), "08" | "57" | "58" | "XX")
        }
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => true,
        _ => false,
    }
}

/// How long a call waits for a connection when all are busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// At most `max` connections to one server, reused.
pub(crate) struct Conns {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    permits: Semaphore,
    /// Connection failures are reported with this description of the server.
    server: String,
}

impl Conns {
    pub(crate) fn new(options: PgConnectOptions, max: u32, server: String) -> Self {
        Self { options, idle: Mutex::new(Vec::new()), permits: Semaphore::new(max.max(1) as usize), server }
    }

    /// A connection: an idle one, or a new one while fewer than `max` are out.
    pub(crate) async fn get(&self) -> Result<Lease<'_>> {
        let permit = match tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(storage_message("the store is closed")),
            Err(_) => {
                return Err(storage_message(format!(
                    "every connection to {} stayed busy for {} s",
                    self.server,
                    ACQUIRE_TIMEOUT.as_secs()
                )));
            }
        };
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => self.options.connect().await.map_err(|e| map(&format!("connecting to PostgreSQL at {}", self.server), e))?,
        };
        Ok(Lease { conns: self, conn: Some(conn), healthy: true, _permit: permit })
    }

    /// Closes the idle connections and refuses new leases.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle: Vec<PgConnection> = self.idle.lock().map(|mut idle| std::mem::take(&mut *idle)).unwrap_or_default();
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// A connection out of [`Conns`]; it goes back when dropped, unless marked broken.
pub(crate) struct Lease<'a> {
    conns: &'a Conns,
    conn: Option<PgConnection>,
    healthy: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Passes the result of a call on the connection through, noting whether the
    /// connection can be reused: yes after success or an error the server answered (a
    /// constraint, a guard), no after an I/O or protocol error.
    pub(crate) fn check<T>(&mut self, result: std::result::Result<T, sqlx::Error>) -> std::result::Result<T, sqlx::Error> {
        self.healthy = match &result {
            Ok(_) => true,
            Err(e) => leaves_connection_usable(e),
        };
        result
    }

    /// Notes that the work on the connection ended normally (errors of ours, such as a
    /// visitor's or a source's, leave the connection as good as success does).
    pub(crate) fn done(&mut self) {
        self.healthy = true;
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        // `conn` is `Some` until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lease holds its connection until dropped"))
    }
}

impl DerefMut for Lease<'_> {
    /// A call is starting: until [`Lease::check`] or [`Lease::done`] says how it ended, the
    /// connection is not put back (a call abandoned halfway, its future dropped, may have
    /// left it in the middle of a message).
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.healthy = false;
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lease holds its connection until dropped"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.healthy
            && let Ok(mut idle) = self.conns.idle.lock()
        {
            idle.push(conn);
        }
        // A connection not put back is dropped here, which closes its socket.
    }
}

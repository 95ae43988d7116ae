//! What every PostgreSQL test needs: the server (`DATABASE_URL`, which must be set: a
//! test never skips for want of a server) and a fresh schema of its own per test, so that
//! tests run in parallel on one database.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use vrs_store_postgres::{Layout, Options, PostgresStore};

/// The server's URL. Panics (the test fails) when `DATABASE_URL` is not set.
pub fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a server (scripts/test starts a throwaway one; \
             or export DATABASE_URL=postgres://user@host:port/db)"
        ),
    }
}

/// Drops `schema` (and everything in it) if it exists.
pub async fn drop_schema(schema: &str) {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.expect("connecting to DATABASE_URL");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut conn).await.expect("dropping a test schema");
    conn.close().await.expect("closing");
}

/// Options for a test schema.
pub fn options(schema: &str, layout: Layout, max_connections: u32) -> Options {
    Options {
        layout: Some(layout),
        schema: Some(schema.to_owned()),
        max_connections,
        application_name: format!("vrs-test-{schema}"),
        migrate: true,
    }
}

/// A schema name for a test: the prefix and the test's name, cut to PostgreSQL's 63.
pub fn schema_name(prefix: &str, test: &str) -> String {
    format!("{prefix}_{test}").chars().take(63).collect()
}

/// A store on a fresh, empty schema of that name (see [`schema_name`]) and layout.
pub async fn fresh_store(schema: &str, layout: Layout) -> PostgresStore {
    let schema = &schema.chars().take(63).collect::<String>();
    PostgresStore::connect_fresh(&database_url(), options(schema, layout, 4)).await.expect("connecting a fresh store")
}

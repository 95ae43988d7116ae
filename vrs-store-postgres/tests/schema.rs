//! The two layouts: the same tables, columns and indexes, the partitioned one with its
//! big tables hash-partitioned by municipality; migrations applied once; a schema keeps
//! its layout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{database_url, drop_schema, fresh_store, options};
use sqlx::{Connection, Row};
use vrs_core::Error;
use vrs_store_postgres::{Layout, Options, PostgresStore};

async fn columns(conn: &mut sqlx::PgConnection, schema: &str) -> BTreeSet<String> {
    // Tables that are not partitions, their columns and types.
    sqlx::query(
        "SELECT c.table_name || '.' || c.column_name || ' ' || c.data_type || ' ' || coalesce(c.collation_name, '-') || ' '
                || c.is_nullable || ' ' || coalesce(replace(c.column_default, $1 || '.', ''), '-') AS col
         FROM information_schema.columns AS c JOIN pg_class AS t ON t.relname = c.table_name
         JOIN pg_namespace AS n ON n.oid = t.relnamespace AND n.nspname = c.table_schema
         WHERE c.table_schema = $1 AND NOT t.relispartition",
    )
    .bind(schema)
    .fetch_all(conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("col"))
    .collect()
}

async fn indexes(conn: &mut sqlx::PgConnection, schema: &str) -> BTreeSet<String> {
    sqlx::query(
        "SELECT replace(replace(i.indexdef, $1 || '.', ''), ' ONLY ', ' ') AS def
         FROM pg_indexes AS i JOIN pg_class AS t ON t.relname = i.tablename
         JOIN pg_namespace AS n ON n.oid = t.relnamespace AND n.nspname = i.schemaname
         WHERE i.schemaname = $1 AND NOT t.relispartition",
    )
    .bind(schema)
    .fetch_all(conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("def"))
    .collect()
}

#[tokio::test]
async fn both_layouts_have_the_same_tables_columns_and_indexes() {
    let (plain, partitioned) = ("vt_schema_plain", "vt_schema_part");
    let a = fresh_store(plain, Layout::Plain).await;
    let b = fresh_store(partitioned, Layout::Partitioned).await;
    assert_eq!((a.layout(), b.layout()), (Layout::Plain, Layout::Partitioned));
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let (cols_a, cols_b) = (columns(&mut conn, plain).await, columns(&mut conn, partitioned).await);
    assert!(cols_a.iter().any(|c| c.starts_with("residents.municipality text C NO")), "{cols_a:?}");
    assert_eq!(cols_a, cols_b);
    assert_eq!(indexes(&mut conn, plain).await, indexes(&mut conn, partitioned).await);

    // Every table of a municipality's data leads with its code.
    let leading: Vec<(String, String)> = sqlx::query(
        "SELECT c.relname AS t, a.attname AS first FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = 1
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname NOT LIKE '\\_%' ORDER BY 1",
    )
    .bind(plain)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("t"), r.get("first")))
    .collect();
    for (table, first) in &leading {
        let expected = match table.as_str() {
            "dose_ids" => "id",   // the idempotency guard, keyed by the dose id
            "vrs_meta" => "name", // the layout's name
            _ => "municipality",
        };
        assert_eq!(first, expected, "{table}");
    }

    // The partitioned layout: the big tables hash-partitioned, eight ways.
    let parts: Vec<(String, String, i64)> = sqlx::query(
        "SELECT c.relname AS t, pg_get_partkeydef(c.oid) AS key, (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) AS n
         FROM pg_partitioned_table AS p JOIN pg_class AS c ON c.oid = p.partrelid JOIN pg_namespace AS s ON s.oid = c.relnamespace
         WHERE s.nspname = $1 ORDER BY 1",
    )
    .bind(partitioned)
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("t"), r.get("key"), r.get("n")))
    .collect();
    let expected: Vec<(String, String, i64)> = [
        ("audit", "HASH (municipality)"),
        ("counters", "HASH (municipality)"),
        ("dose_ids", "HASH (id)"),
        ("doses", "HASH (municipality)"),
        ("findings", "HASH (municipality)"),
        ("residents", "HASH (municipality)"),
        ("slots", "HASH (municipality)"),
    ]
    .iter()
    .map(|(t, k)| ((*t).to_owned(), (*k).to_owned(), 8))
    .collect();
    assert_eq!(parts, expected);
    let none: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_partitioned_table AS p JOIN pg_class AS c ON c.oid = p.partrelid
         JOIN pg_namespace AS s ON s.oid = c.relnamespace WHERE s.nspname = $1",
    )
    .bind(plain)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(none, 0);
    for store in [&a, &b] {
        let report = store.check().await.unwrap();
        assert!(report.is_clean(), "{report:?}");
    }
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_is_migrated_once_and_keeps_its_layout() {
    let schema = "vt_schema_keep";
    drop_schema(schema).await;
    // Not migrated, and asked not to: refused.
    let unmigrated = PostgresStore::connect_with(&database_url(), Options { migrate: false, ..options(schema, Layout::Plain, 1) }).await;
    assert!(matches!(unmigrated, Err(Error::Storage { ref message, .. }) if message.contains("not migrated")), "{unmigrated:?}");
    // Migrated as partitioned; connecting again (any number of times, at once) applies nothing new.
    let url = format!("{}{}schema={schema}", database_url(), if database_url().contains('?') { '&' } else { '?' });
    assert_eq!(
        PostgresStore::migrate(&url, Options { layout: Some(Layout::Partitioned), ..Options::default() }).await.unwrap(),
        Layout::Partitioned
    );
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    for connect in connects {
        assert_eq!(connect.await.unwrap().unwrap().layout(), Layout::Partitioned, "the schema's own layout");
    }
    let applied: i64 = {
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}._sqlx_migrations")).fetch_one(&mut conn).await.unwrap()
    };
    // Each migration of the layout once (counted from the files, so adding one needs no edit here).
    let known = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/partitioned"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
    assert_eq!(applied, i64::try_from(known).unwrap());
    // The other layout is refused, with words that say why.
    match PostgresStore::connect_with(&url, Options { layout: Some(Layout::Plain), ..Options::default() }).await {
        Err(Error::Storage { message, .. }) => assert!(message.contains("has the partitioned layout, not the plain one"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A fresh store needs a schema of its own to wipe; it never wipes the default one.
    assert!(matches!(PostgresStore::connect_fresh(&database_url(), Options::default()).await, Err(Error::Invalid { field: "schema", .. })));
    drop_schema(schema).await;
}

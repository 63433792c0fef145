//! What `move` reads of a tenant schema to copy it and to prove the copy complete: its
//! tables, a fingerprint of every table's rows and every sequence's position, the data
//! role's privileges, and the estimates `move --dry-run` shows.
//!
//! A fingerprint is read at the source and at the target inside the transactions of the
//! move (the source's writes stopped, the target's copy not yet committed), so both see
//! the same instant. The migration history is a table of the schema, so it is compared row
//! by row like the others.

use std::collections::BTreeMap;

use anyhow::Result;
use deadpool_postgres::GenericClient;

use crate::domain::names::quote_ident;
use crate::pg::connect::PgContext;

/// Per table: (rows, checksum); per sequence: (last_value, is_called).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub tables: BTreeMap<String, (i64, String)>,
    pub sequences: BTreeMap<String, (i64, bool)>,
}

impl Fingerprint {
    pub fn rows(&self) -> i64 {
        self.tables.values().map(|(n, _)| n).sum()
    }

    /// What differs between the source (`self`) and the copy, one sentence each; empty
    /// when they are equal.
    pub fn differences(&self, copy: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (name, (rows, sum)) in &self.tables {
            match copy.tables.get(name) {
                None => out.push(format!("table {name} is missing from the copy")),
                Some((r, _)) if r != rows => {
                    out.push(format!("table {name} has {rows} rows, the copy {r}"))
                }
                Some((_, s)) if s != sum => out.push(format!(
                    "table {name} has the same number of rows ({rows}) but other contents"
                )),
                Some(_) => {}
            }
        }
        for name in copy.tables.keys().filter(|n| !self.tables.contains_key(*n)) {
            out.push(format!("the copy has a table {name} the source has not"));
        }
        for (name, at) in &self.sequences {
            match copy.sequences.get(name) {
                None => out.push(format!("sequence {name} is missing from the copy")),
                Some(c) if c != at => out.push(format!(
                    "sequence {name} is at {} (is_called {}), the copy at {} (is_called {})",
                    at.0, at.1, c.0, c.1
                )),
                Some(_) => {}
            }
        }
        out
    }
}

/// The ordinary tables of `schema` (partitions included, each on its own), by name.
pub async fn tables(client: &impl GenericClient, schema: &str) -> Result<Vec<String>> {
    relations(client, schema, &["r"]).await
}

async fn relations(
    client: &impl GenericClient,
    schema: &str,
    kinds: &[&str],
) -> Result<Vec<String>> {
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relkind::text = ANY($2) ORDER BY 1",
            &[&schema, &kinds],
        )
        .await
        .with_pg_context(|| format!("cannot list the tables of schema {schema}"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every table's row count and checksum, and every sequence's position. The checksum is
/// the sum of the first 64 bits of each row's md5 (its text form): independent of the
/// order the rows are read in, and read in one pass without holding the rows in memory.
pub async fn fingerprint(client: &impl GenericClient, schema: &str) -> Result<Fingerprint> {
    let mut fp = Fingerprint::default();
    let s = quote_ident(schema);
    for table in tables(client, schema).await? {
        let sql = format!(
            "SELECT pg_catalog.count(*), coalesce(pg_catalog.sum(('x' || \
                    pg_catalog.left(pg_catalog.md5(tenantctl_row::text), 16))::bit(64)::bigint::numeric), 0)::text \
               FROM ONLY {s}.{} AS tenantctl_row",
            quote_ident(&table)
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .with_pg_context(|| format!("cannot read the rows of table {table}"))?;
        fp.tables.insert(table, (row.get(0), row.get(1)));
    }
    for seq in relations(client, schema, &["S"]).await? {
        let sql = format!(
            "SELECT last_value, is_called FROM {s}.{}",
            quote_ident(&seq)
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .with_pg_context(|| format!("cannot read sequence {seq}"))?;
        fp.sequences.insert(seq, (row.get(0), row.get(1)));
    }
    Ok(fp)
}

/// `GRANT` statements giving `role` at the copy exactly the privileges it holds on each
/// table, view and sequence of `schema` at the source (a migration may have narrowed some
/// on purpose: the example V7 leaves INSERT only on audit_log).
pub async fn privileges_of(
    client: &impl GenericClient,
    schema: &str,
    role: &str,
) -> Result<String> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relkind = 'S', \
                    pg_catalog.string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, \
                    pg_catalog.aclexplode(c.relacl) AS a \
              WHERE n.nspname = $1 AND a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2) \
              GROUP BY c.relname, c.relkind ORDER BY 1",
            &[&schema, &role],
        )
        .await
        .with_pg_context(|| format!("cannot read the privileges of role {role} in schema {schema}"))?;
    let (s, r) = (quote_ident(schema), quote_ident(role));
    Ok(rows
        .iter()
        .map(|row| {
            let kind = if row.get::<_, bool>(1) {
                "SEQUENCE"
            } else {
                "TABLE"
            };
            format!(
                "GRANT {} ON {kind} {s}.{} TO {r};\n",
                row.get::<_, String>(2),
                quote_ident(row.get(0))
            )
        })
        .collect())
}

/// One table as `move --dry-run` shows it: the planner's row estimate and its size on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableEstimate {
    pub table: String,
    pub estimated_rows: i64,
    pub bytes: i64,
}

/// The tables of `schema` with their estimated rows (pg_class.reltuples: no table is read)
/// and total size (indexes and TOAST included).
pub async fn estimates(client: &impl GenericClient, schema: &str) -> Result<Vec<TableEstimate>> {
    let rows = client
        .query(
            "SELECT c.relname::text, greatest(c.reltuples, 0)::bigint, \
                    pg_catalog.pg_total_relation_size(c.oid) \
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema],
        )
        .await
        .with_pg_context(|| format!("cannot read the size of schema {schema}"))?;
    Ok(rows
        .iter()
        .map(|r| TableEstimate {
            table: r.get(0),
            estimated_rows: r.get(1),
            bytes: r.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(tables: &[(&str, i64, &str)], seqs: &[(&str, i64, bool)]) -> Fingerprint {
        Fingerprint {
            tables: tables
                .iter()
                .map(|(n, r, s)| (n.to_string(), (*r, s.to_string())))
                .collect(),
            sequences: seqs
                .iter()
                .map(|(n, v, c)| (n.to_string(), (*v, *c)))
                .collect(),
        }
    }

    #[test]
    fn equal_fingerprints_have_no_differences() {
        let a = fp(&[("t", 2, "9")], &[("t_id_seq", 2, true)]);
        assert!(a.differences(&a.clone()).is_empty());
        assert_eq!(a.rows(), 2);
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let src = fp(&[("a", 2, "9"), ("b", 1, "5")], &[("s", 3, true)]);
        let copy = fp(&[("a", 2, "8"), ("c", 0, "0")], &[("s", 2, true)]);
        let d = src.differences(&copy);
        assert_eq!(
            d,
            vec![
                "table a has the same number of rows (2) but other contents",
                "table b is missing from the copy",
                "the copy has a table c the source has not",
                "sequence s is at 3 (is_called true), the copy at 2 (is_called true)",
            ]
        );
        let fewer = fp(&[("a", 1, "9"), ("b", 1, "5")], &[("s", 3, true)]);
        assert_eq!(
            src.differences(&fewer),
            vec!["table a has 2 rows, the copy 1"]
        );
    }
}

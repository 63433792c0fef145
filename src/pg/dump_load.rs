//! Loading a checked dump into a database: the schema sections are the exact statements
//! `dump_policy::check_sql` accepted; the data section is read line by line and loaded by
//! COPY and setval statements tenantctl builds itself, so no text of the dump outside a
//! checked statement is ever executed (pg_restore would run a COPY header as it finds it,
//! and a hand-made archive can hide statements there).

use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_postgres::Transaction;

use crate::domain::dump_policy::{self, DataLine, Policy};
use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::pg::connect::PgContext;

/// The SQL a client program prints on stdout (pg_restore -f -, pg_dump), as text.
pub async fn text_of(cmd: std::process::Command, what: &str) -> Result<String> {
    let out = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .map_err(|_| bad_input(format!("{what} printed text that is not UTF-8")))
}

/// Checks a schema section's SQL against the policy, refusing the dump (exit 2) when it
/// holds anything else.
pub fn checked(text: &str, policy: &Policy, file: &str) -> Result<String> {
    dump_policy::check_sql(text, policy).map_err(|why| {
        bad_input(format!(
            "refusing to restore {file}: {why}; nothing was changed"
        ))
    })
}

/// Runs statements checked by `checked`.
pub async fn run_sql(tx: &Transaction<'_>, sql: &str, what: &str) -> Result<()> {
    tx.batch_execute(sql)
        .await
        .with_pg_context(|| format!("cannot restore {what}"))
}

/// Bytes sent to the server per COPY message.
const CHUNK: usize = 256 * 1024;

/// Streams the data section printed by `cmd` into the tables of `schema`.
pub async fn load_data(
    tx: &Transaction<'_>,
    cmd: std::process::Command,
    schema: &str,
    what: &str,
) -> Result<()> {
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s).await;
        String::from_utf8_lossy(&s).trim().to_string()
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let loaded = copy_lines(tx, BufReader::with_capacity(CHUNK, stdout), schema, what).await;
    let status = child
        .wait()
        .await
        .with_context(|| format!("{what} failed"))?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("{what} failed: {stderr}");
    }
    loaded
}

async fn copy_lines<R: tokio::io::AsyncBufRead + Unpin>(
    tx: &Transaction<'_>,
    mut input: R,
    schema: &str,
    what: &str,
) -> Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| bad_input(format!("{what}: a statement line is not UTF-8")))?;
        let statement = dump_policy::data_line(text.trim_end(), schema)
            .map_err(|why| bad_input(format!("refusing to restore the dump: {why}")))?;
        match statement {
            DataLine::Skip => {}
            DataLine::Copy { table, columns } => {
                copy_table(tx, &mut input, schema, &table, columns.as_deref()).await?;
            }
            DataLine::SetVal {
                sequence,
                value,
                called,
            } => {
                let name = format!("{}.{}", quote_ident(schema), quote_ident(&sequence));
                tx.execute(
                    "SELECT pg_catalog.setval($1::text::regclass, $2, $3)",
                    &[&name, &value, &called],
                )
                .await
                .with_pg_context(|| format!("cannot set sequence {sequence}"))?;
            }
        }
    }
}

/// COPY into one table: the rows up to the `\.` line are sent as they are.
async fn copy_table<R: tokio::io::AsyncBufRead + Unpin>(
    tx: &Transaction<'_>,
    input: &mut R,
    schema: &str,
    table: &str,
    columns: Option<&[String]>,
) -> Result<()> {
    let cols = columns
        .map(|c| {
            format!(
                " ({})",
                c.iter()
                    .map(|n| quote_ident(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .unwrap_or_default();
    let stmt = format!(
        "COPY {}.{}{cols} FROM STDIN",
        quote_ident(schema),
        quote_ident(table)
    );
    let sink = tx
        .copy_in::<_, Bytes>(&stmt)
        .await
        .with_pg_context(|| format!("cannot restore the rows of table {table}"))?;
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            return Err(anyhow!(
                "the rows of table {table} end without their \\. line: the dump is truncated"
            ));
        }
        if line == b"\\.\n" || line == b"\\." {
            break;
        }
        buf.extend_from_slice(&line);
        if buf.len() >= CHUNK {
            sink.send(buf.split().freeze())
                .await
                .with_pg_context(|| format!("cannot restore the rows of table {table}"))?;
        }
    }
    if !buf.is_empty() {
        sink.send(buf.freeze())
            .await
            .with_pg_context(|| format!("cannot restore the rows of table {table}"))?;
    }
    sink.finish()
        .await
        .with_pg_context(|| format!("cannot restore the rows of table {table}"))?;
    Ok(())
}

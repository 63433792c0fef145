//! Waiting for tenantctl's locks with a deadline, and naming who holds one when it passes.
//!
//! Any role may take any advisory lock, so a tenant's lock (`LOCK_CLASS`, `hashtext(schema)`)
//! can be held by a session that has nothing to do with tenantctl, for ever. Every wait for
//! one therefore has a deadline (`--lock-timeout`; PostgreSQL's `lock_timeout` covers
//! advisory locks too), and when it passes the message names the holder from `pg_locks`
//! and `pg_stat_activity`. Another tenantctl holding the lock is told apart by a second,
//! shared lock it holds alongside (`TENANT_TX_MARK`): `migrate` keeps waiting for it, so two
//! runs still queue rather than fail.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::pg::pipeline::Params;

/// The deadline for commands that wait on tenantctl's locks when `--lock-timeout` is not
/// given: backup, drop, restore and the registry upgrade (`migrate` waits, as documented).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The first key of tenantctl's two-key advisory locks ("tntc"); the second is
/// `hashtext(schema)`. A hash collision only makes two tenants wait for each other.
pub const LOCK_CLASS: i32 = 0x746e_7463;

/// Takes tenant `schema`'s lock for the session, without waiting: `false` when another
/// session holds it. `create` holds it while it builds a tenant on another server, across
/// several transactions (docs/placements.md).
pub async fn try_hold_tenant(
    client: &impl GenericClient,
    schema: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_lock($1, pg_catalog.hashtext($2))",
            &[&LOCK_CLASS, &schema],
        )
        .await?
        .get(0))
}

/// Takes tenant `schema`'s lock for the session, waiting at most `deadline`: an error
/// naming the holder when it is not granted by then. `move` holds it on home while the
/// tenant is copied elsewhere (docs/placements.md).
pub async fn hold_tenant_within(
    client: &impl GenericClient,
    slug: &str,
    schema: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let timeout = lock_timeout_value(deadline);
    client
        .query_one(
            "SELECT pg_catalog.set_config('lock_timeout', $1, false)",
            &[&timeout],
        )
        .await?;
    let taken = client
        .query_one(
            "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))::text",
            &[&LOCK_CLASS, &schema],
        )
        .await;
    let _ = client.batch_execute("RESET lock_timeout").await;
    match taken {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            let holders = tenant_lock_holders(client, schema).await?;
            anyhow::bail!(tenant_locked_message(slug, &holders, Some(deadline)))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot take the lock of tenant {slug}: {}",
            crate::pg::connect::describe_pg_error(&e)
        )),
    }
}

/// Releases what `try_hold_tenant` took.
pub async fn release_tenant(
    client: &impl GenericClient,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .query_one(
            "SELECT pg_catalog.pg_advisory_unlock($1, pg_catalog.hashtext($2))",
            &[&LOCK_CLASS, &schema],
        )
        .await
        .map(|_| ())
}

/// Held in shared mode, for the transaction, by every tenantctl transaction that holds a
/// tenant's lock. A one-key (bigint) advisory lock: PostgreSQL keeps those apart from the
/// two-key tenant locks, so it never collides with a tenant's `hashtext`.
pub const TENANT_TX_MARK: i64 = ((LOCK_CLASS as i64) << 32) | 1;

/// Held in shared mode, for the session, by every live `migrate` run, so that a tenant
/// marked `migrating` by a live run is not taken for one left by an interrupted run.
pub const RUN_MARK: i64 = ((LOCK_CLASS as i64) << 32) | 2;

/// Held exclusively, for the transaction, while shared migrations are applied to a server
/// (`tenant::shared`): two runs apply them one after the other, never both at once.
pub const SHARED_MIGRATIONS: i64 = ((LOCK_CLASS as i64) << 32) | 3;

/// Marks the transaction as tenantctl's (`TENANT_TX_MARK`, never waiting for it).
const MARK: &str = "SELECT pg_catalog.pg_try_advisory_xact_lock_shared($1::bigint)";
/// The same, and sets the transaction's lock_timeout to `$2`: every lock wait after it,
/// the tenant's own lock included, ends by then.
const MARK_WITH_DEADLINE: &str = "SELECT pg_catalog.pg_try_advisory_xact_lock_shared($1::bigint), \
        pg_catalog.set_config('lock_timeout', $2, true)";

/// The statement and parameters to send before taking a tenant's lock (see `MARK`).
pub fn mark(deadline: Option<Duration>) -> (&'static str, Params) {
    match deadline {
        None => (MARK, vec![Box::new(TENANT_TX_MARK)]),
        Some(d) => (
            MARK_WITH_DEADLINE,
            vec![Box::new(TENANT_TX_MARK), Box::new(lock_timeout_value(d))],
        ),
    }
}

/// A duration as a `lock_timeout` setting (at least 1 ms: 0 would mean no deadline).
pub fn lock_timeout_value(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// A session holding a lock tenantctl waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub role: Option<String>,
    pub application: Option<String>,
    /// Seconds since its transaction began (or since its last statement, when idle);
    /// `None` when pg_stat_activity hides it from this role.
    pub seconds: Option<i64>,
    /// Whether it is a tenantctl transaction (it holds `TENANT_TX_MARK`).
    pub tenantctl: bool,
}

impl fmt::Display for Holder {
    /// `pid 4242 (role app, application 'psql', for 12 s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut about = Vec::new();
        if let Some(r) = &self.role {
            about.push(format!("role {r}"));
        }
        match self.application.as_deref() {
            Some(a) if !a.is_empty() => about.push(format!("application '{a}'")),
            _ => {}
        }
        if let Some(s) = self.seconds {
            about.push(format!("for {s} s"));
        }
        write!(f, "pid {}", self.pid)?;
        if !about.is_empty() {
            write!(f, " ({})", about.join(", "))?;
        }
        Ok(())
    }
}

/// Who a session is, from pg_stat_activity; `$pid` is `l.pid` of the pg_locks row.
const HOLDER_COLUMNS: &str = "l.pid, a.usename::text, a.application_name::text, \
        extract(epoch FROM now() - coalesce(a.xact_start, a.state_change))::bigint, \
        EXISTS (SELECT 1 FROM pg_locks m WHERE m.pid = l.pid AND m.locktype = 'advisory' \
                 AND m.granted AND m.objsubid = 1 \
                 AND m.classid = ($1::bigint >> 32)::oid AND m.objid = ($1::bigint & 4294967295)::oid)";

fn holder(r: &Row) -> Holder {
    Holder {
        pid: r.get(0),
        role: r.get(1),
        application: r.get(2),
        seconds: r.get(3),
        tenantctl: r.get(4),
    }
}

/// The sessions other than this one holding tenant `schema`'s lock.
pub async fn tenant_lock_holders(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<Holder>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {HOLDER_COLUMNS} FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() \
            AND l.database = (SELECT oid FROM pg_database WHERE datname = pg_catalog.current_database()) \
            AND l.objsubid = 2 AND l.classid = $2::bigint::oid \
            AND l.objid = (pg_catalog.hashtext($3)::bigint & 4294967295)::oid \
          ORDER BY l.pid"
    );
    let rows = client
        .query(&sql, &[&TENANT_TX_MARK, &i64::from(LOCK_CLASS), &schema])
        .await?;
    Ok(rows.iter().map(holder).collect())
}

/// The sessions other than this one holding a lock on a table of `schema` (a writer in
/// flight, or anyone who locked a table explicitly): who `move` waits for when it stops the
/// application's writes. The longest-running first.
pub async fn table_lock_holders(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<Holder>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT DISTINCT ON (l.pid) {HOLDER_COLUMNS} \
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND l.locktype = 'relation' \
            AND l.database = (SELECT oid FROM pg_database WHERE datname = pg_catalog.current_database()) \
            AND l.relation IN (SELECT c.oid FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $2) \
          ORDER BY l.pid"
    );
    let mut holders: Vec<Holder> = client
        .query(&sql, &[&TENANT_TX_MARK, &schema])
        .await?
        .iter()
        .map(holder)
        .collect();
    holders.sort_by_key(|h| std::cmp::Reverse(h.seconds.unwrap_or(0)));
    Ok(holders)
}

/// The sessions other than this one holding a lock a registry upgrade takes: the registry's
/// advisory lock, or any lock on a table of the registry; the longest-running first.
pub async fn registry_lock_holders(
    client: &impl GenericClient,
) -> Result<Vec<Holder>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT DISTINCT ON (l.pid) {HOLDER_COLUMNS} \
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() \
            AND l.database = (SELECT oid FROM pg_database WHERE datname = pg_catalog.current_database()) \
            AND ((l.locktype = 'advisory' AND l.objsubid = 2 \
                  AND l.classid = $2::bigint::oid AND l.objid = 0) \
              OR (l.locktype = 'relation' AND l.relation IN ( \
                  SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
                     AND c.relname IN ('tenants', 'tenant_migrations', 'tenant_drops', \
                                       'tenantctl_registry_history')))) \
          ORDER BY l.pid"
    );
    let mut holders: Vec<Holder> = client
        .query(&sql, &[&TENANT_TX_MARK, &i64::from(LOCK_CLASS)])
        .await?
        .iter()
        .map(holder)
        .collect();
    holders.sort_by_key(|h| std::cmp::Reverse(h.seconds.unwrap_or(0)));
    Ok(holders)
}

/// "pid 1 (...), pid 2 (...) and 3 more"; the advice names the first.
pub fn describe_holders(holders: &[Holder]) -> String {
    const SHOWN: usize = 3;
    let mut s = holders
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if holders.len() > SHOWN {
        s.push_str(&format!(" and {} more", holders.len() - SHOWN));
    }
    s
}

/// Why a tenant could not be locked within `deadline` (`None`: the server's own
/// `lock_timeout` setting ended the wait), naming the holder and what to do.
pub fn tenant_locked_message(slug: &str, holders: &[Holder], deadline: Option<Duration>) -> String {
    let waited = match deadline {
        Some(d) => format!("{} (--lock-timeout)", describe_duration(d)),
        None => "as long as the server's lock_timeout setting allows".to_string(),
    };
    match holders.first() {
        None => format!(
            "tenant {slug} stayed locked: waited {waited}, and its holder has let go since; \
             try again"
        ),
        Some(h) if h.tenantctl => format!(
            "tenant {slug} is locked by another tenantctl, {}; waited {waited}; try again \
             when it finishes",
            describe_holders(holders)
        ),
        Some(h) => format!(
            "tenant {slug} is locked by {}; waited {waited}; wait for it or end it with \
             pg_terminate_backend({})",
            describe_holders(holders),
            h.pid
        ),
    }
}

/// `2 s`, `500 ms`, `1.5 s`.
pub fn describe_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Marks this session as tenantctl's (`TENANT_TX_MARK`, shared, never waiting) for as long
/// as it holds tenants' locks for the session across transactions (`rebalance`, `move`): a migrate
/// that waits for one of them keeps waiting, as behind another tenantctl transaction,
/// instead of failing at its --lock-timeout; and a command that gives up names it as
/// another tenantctl.
pub async fn mark_session(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_catalog.pg_try_advisory_lock_shared($1::bigint)",
            &[&TENANT_TX_MARK],
        )
        .await
        .map(|_| ())
}

/// Ends `mark_session`.
pub async fn unmark_session(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_catalog.pg_advisory_unlock_shared($1::bigint)",
            &[&TENANT_TX_MARK],
        )
        .await
        .map(|_| ())
}

/// Marks this session as a live `migrate` run (`RUN_MARK`, never waiting for it), for as
/// long as the session lasts.
pub async fn mark_run(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_catalog.pg_try_advisory_lock_shared($1::bigint)",
            &[&RUN_MARK],
        )
        .await
        .map(|_| ())
}

/// The backend pids of the other live `migrate` runs on this database (see `RUN_MARK`).
pub async fn other_runs(client: &impl GenericClient) -> Result<Vec<i32>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                AND pid <> pg_catalog.pg_backend_pid() AND objsubid = 1 \
                AND database = (SELECT oid FROM pg_database WHERE datname = pg_catalog.current_database()) \
                AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid \
              ORDER BY pid",
            &[&RUN_MARK],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_read_like_a_sentence() {
        let h = Holder {
            pid: 4242,
            role: Some("app".into()),
            application: Some("psql".into()),
            seconds: Some(12),
            tenantctl: false,
        };
        assert_eq!(
            tenant_locked_message(
                "beta",
                std::slice::from_ref(&h),
                Some(Duration::from_secs(2))
            ),
            "tenant beta is locked by pid 4242 (role app, application 'psql', for 12 s); \
             waited 2 s (--lock-timeout); wait for it or end it with pg_terminate_backend(4242)"
        );
        let hidden = Holder {
            role: None,
            application: Some(String::new()),
            seconds: None,
            ..h
        };
        assert_eq!(hidden.to_string(), "pid 4242");
        assert!(
            tenant_locked_message("beta", &[], Some(Duration::from_millis(500)))
                .contains("waited 500 ms (--lock-timeout)")
        );
    }

    #[test]
    fn marks_never_collide_with_tenant_locks() {
        // One-key locks have objsubid 1, two-key tenant locks objsubid 2; the keys also differ.
        assert_eq!(TENANT_TX_MARK >> 32, i64::from(LOCK_CLASS));
        assert_ne!(TENANT_TX_MARK, RUN_MARK);
        assert!(![TENANT_TX_MARK, RUN_MARK].contains(&SHARED_MIGRATIONS));
        assert_eq!(lock_timeout_value(Duration::from_millis(0)), "1ms");
        assert_eq!(describe_duration(Duration::from_millis(1500)), "1.5 s");
    }
}

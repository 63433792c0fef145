//! The pipelined transaction (`txn::Tx`) on a real server: what its connection looks like
//! to the next borrower of the pool.

mod common;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tenantctl::pg::txn::{Step, Tx};
use tokio_postgres::NoTls;

use common::*;

/// A one-connection pool recycling like tenantctl's (no reset on the way out), so the
/// second `get` returns the very connection the first one used.
fn one_connection_pool(url: &str) -> Pool {
    let mgr = Manager::from_config(
        url.parse().expect("test URL parses"),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(1)
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_transaction_dropped_while_open_is_rolled_back_before_its_connection_is_reused() {
    let db = TestDb::new("txdrop");
    let pool = one_connection_pool(&db.url);
    block_on(async {
        let conn = pool.get().await.unwrap();
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        {
            let mut tx = Tx::begin(&conn);
            tx.queue(
                Step::Sql("test work"),
                "SELECT pg_advisory_xact_lock(4242); CREATE TABLE abandoned (id int)",
            );
            tx.flush().await.expect("the first flight succeeds");
            // Dropped here, open: an early return between two flights.
        }
        drop(conn);
        let conn = pool.get().await.unwrap();
        let again: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(again, pid, "the pool handed out the same connection");
        // Outside any transaction now: this commits on its own, visible to others at once.
        conn.batch_execute("CREATE TABLE next_borrower (id int)")
            .await
            .unwrap();
    });
    assert_eq!(
        db.scalar("SELECT to_regclass('public.next_borrower') IS NOT NULL"),
        "t",
        "the next borrower did not land inside the abandoned transaction"
    );
    assert_eq!(
        db.scalar("SELECT to_regclass('public.abandoned') IS NULL"),
        "t",
        "the abandoned transaction was rolled back"
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242"),
        "0",
        "its lock went with it"
    );
}

#[test]
fn a_failed_flight_reports_the_first_failure_and_ends_the_transaction() {
    let db = TestDb::new("txfail");
    let pool = one_connection_pool(&db.url);
    block_on(async {
        let conn = pool.get().await.unwrap();
        let mut tx = Tx::begin(&conn);
        tx.queue(
            Step::Sql("cannot make the first table"),
            "CREATE TABLE first_t (id int)",
        );
        tx.queue(
            Step::Sql("cannot read the missing table"),
            "SELECT * FROM missing_t",
        );
        tx.queue(
            Step::Sql("cannot make the last table"),
            "CREATE TABLE last_t (id int)",
        );
        let err = tx.flush().await.expect_err("the second request fails");
        assert_eq!(err.step, Step::Sql("cannot read the missing table"));
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read the missing table: ")
                && text.contains("\"missing_t\" does not exist"),
            "{text}"
        );
        drop(tx);
        // The connection is usable and outside any transaction.
        conn.batch_execute("CREATE TABLE afterwards (id int)")
            .await
            .unwrap();
    });
    assert_eq!(
        db.scalar(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
             WHERE relname IN ('first_t', 'last_t', 'afterwards')"
        ),
        "afterwards"
    );
}

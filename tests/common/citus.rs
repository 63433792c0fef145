//! A Citus database of its own for one test: the same database on the coordinator and both
//! workers of the cluster scripts/with-citus.sh starts (`make test` does), with the citus
//! extension in each and the workers added to the coordinator.

use std::sync::atomic::Ordering;

use super::{query, replace_dbname, try_query, TestDb, COUNTER};

/// The coordinator's admin URL (trusted login, no password).
pub fn coordinator_url() -> String {
    std::env::var("TENANTCTL_TEST_CITUS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .expect(
            "the Citus tests need a Citus cluster: run them through `make test`, or \
             scripts/with-citus.sh NAME cargo test --test citus (after scripts/need-citus.sh)",
        )
}

/// The workers' ports.
pub fn worker_ports() -> Vec<u16> {
    std::env::var("TENANTCTL_TEST_CITUS_WORKERS")
        .expect("scripts/with-citus.sh exports TENANTCTL_TEST_CITUS_WORKERS")
        .split(',')
        .map(|p| p.parse().expect("a port"))
        .collect()
}

fn port_of(url: &str) -> u16 {
    let host_port = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

/// `url` with another port.
pub fn with_port(url: &str, port: u16) -> String {
    url.replacen(&format!(":{}/", port_of(url)), &format!(":{port}/"), 1)
}

static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Keeps other tests of this process from adding nodes while it is held: adding a node
/// copies every role of the cluster to it, so a test's restore role that exists just then
/// could be copied to a worker after the restore dropped it (roles are the cluster's, not
/// one database's). Take it after `CitusDb::new`, which takes it too.
pub fn no_node_added() -> std::sync::MutexGuard<'static, ()> {
    SETUP.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct CitusDb {
    /// The database on the coordinator: `db.run`, `db.query`... work as for any test.
    pub db: TestDb,
    /// The same database on each worker.
    pub workers: Vec<String>,
}

impl CitusDb {
    pub fn new(label: &str) -> CitusDb {
        CitusDb::with_workers(label, worker_ports().len())
    }

    /// Like `new`, with only the first `added` workers added to the coordinator (the others
    /// have the database and the extension, for `add_worker`).
    pub fn with_workers(label: &str, added: usize) -> CitusDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("c_{}_{}_{}", label.replace('-', "_"), std::process::id(), n);
        let admin = coordinator_url();
        let ports = worker_ports();
        let url = replace_dbname(&admin, &name);
        let workers: Vec<String> = ports.iter().map(|p| with_port(&url, *p)).collect();
        for u in std::iter::once(&url).chain(&workers) {
            query(
                &replace_dbname(u, "postgres"),
                &format!("CREATE DATABASE \"{name}\""),
            );
            query(u, "CREATE EXTENSION citus");
        }
        // A shard move names its replication slots, publications and roles on the workers
        // after an operation id counted per coordinator database, from 1; slots and roles
        // belong to the whole worker instance, which every test database here shares: two
        // tests moving tenants at once would collide there ("replication slot ... already
        // exists"). Each test database counts from a number of its own.
        let first_operation = (std::process::id() as i64 % 100_000) * 100_000 + n as i64 * 1000 + 1;
        let mut setup = format!(
            "SELECT setval('pg_catalog.pg_dist_operationid_seq', {first_operation}, false);\
             SELECT citus_set_coordinator_host('127.0.0.1', {});",
            port_of(&url)
        );
        for p in ports.iter().take(added) {
            setup.push_str(&format!("SELECT citus_add_node('127.0.0.1', {p});"));
        }
        {
            // Adding a node copies the roles to it (ALTER ROLE postgres on the worker): two
            // databases doing it at once collide there ("tuple concurrently updated").
            let _one_at_a_time = SETUP.lock().unwrap_or_else(|e| e.into_inner());
            query(&url, &setup);
        }
        let dir = std::env::temp_dir().join(format!("tenantctl-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        CitusDb {
            db: TestDb { name, url, dir },
            workers,
        }
    }

    /// Adds worker `i` (0-based) to the coordinator.
    pub fn add_worker(&self, i: usize) {
        let _one_at_a_time = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        query(
            &self.db.url,
            &format!("SELECT citus_add_node('127.0.0.1', {})", worker_ports()[i]),
        );
    }

    /// `host:port` of each worker, as Citus names them.
    pub fn worker_nodes(&self) -> Vec<String> {
        worker_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Each tenant schema's node (`host:port`), from Citus's metadata, by schema.
    pub fn nodes(&self) -> std::collections::BTreeMap<String, String> {
        self.db
            .query(
                "SELECT s.schema_name::text, min(sh.nodename || ':' || sh.nodeport) \
                   FROM citus_schemas s JOIN citus_shards sh USING (colocation_id) \
                  GROUP BY 1 HAVING count(DISTINCT (sh.nodename, sh.nodeport)) = 1",
            )
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
            .collect()
    }
}

impl Drop for CitusDb {
    fn drop(&mut self) {
        for u in std::iter::once(&self.db.url).chain(&self.workers) {
            let _ = try_query(
                &replace_dbname(u, "postgres"),
                &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db.name),
            );
        }
    }
}

/// A home database, and `[servers.c]` pointing at a fresh Citus coordinator database
/// (trusted login on 127.0.0.1: no password), after `extra` lines of tenants.toml.
pub fn home_and_citus(label: &str, extra: &str) -> (TestDb, CitusDb) {
    let home = TestDb::new(label);
    let c = CitusDb::new(label);
    c.serve_as_c(&home, extra);
    (home, c)
}

impl CitusDb {
    /// Configures this coordinator's database as `[servers.c]` of `home`, after `extra`
    /// lines of tenants.toml.
    pub fn serve_as_c(&self, home: &TestDb, extra: &str) {
        home.config(&format!(
            "{extra}\n[servers.c]\nurl = \"{}\"\n",
            self.db.url
        ));
    }
}

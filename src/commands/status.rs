//! `tenantctl status`: one row per tenant, answered from the registry (one query, however
//! many tenants), with pending counts from the migrations folder.
//!
//! The text form over the whole fleet (or a selector) reads the registry as a stream and
//! keeps only counts: up to `FULL_TABLE_LIMIT` tenants it prints the table, above that a
//! summary (tenants per version, per state and, on Citus, per node; the oldest pending;
//! failures grouped by error), and with `--all` every row as it arrives. `--format json` writes each row into
//! its one document as it arrives. Neither's memory grows with the fleet.
//!
//! `--sizes` (Citus only): the tenants' bytes per worker node, read before anything is
//! shown from each coordinator the tenants live on (home, and every Citus `[servers.NAME]`:
//! one `Backend::sizes` query each, through `Nodes::read`), summed per server and node as
//! the tenants arrive.

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use serde::Serialize;

use crate::cli::{Format, StatusArgs};
use crate::commands::nodes::Nodes;
use crate::commands::session::{pick_tenants, Session};

use crate::domain::exit::{FAILED, OK};
use crate::domain::migration_set::MigrationSet;
use crate::domain::settings::HOME_SERVER;
use crate::output::{count, escape_line, size, table, JsonStream};
use crate::registry::{self, Pick, Tenant};
use crate::tenant::shared::{self, SharedSet};

/// Up to this many tenants, text status prints the whole table; above, a summary.
const FULL_TABLE_LIMIT: usize = 50;
/// Distinct error messages kept for the summary; the rest are counted together, so a
/// fleet whose every error is different still runs in bounded memory.
const ERROR_GROUPS_KEPT: usize = 1000;
/// Error groups shown, and example slugs per group.
const TOP_ERRORS: usize = 5;
const EXAMPLES: usize = 3;

pub async fn run(s: &Session, args: &StatusArgs) -> Result<u8> {
    let set = MigrationSet::load(&s.settings.migrations_dir)?;
    let latest = set.latest();
    let shared_set = s.shared_set()?;
    let (_pool, mut conn) = s.connect(1).await?;
    let pick = match &args.select.selector {
        Some(sel) => Pick::Selected(sel),
        None => Pick::All,
    };
    if s.format == Format::Prometheus {
        let placed = match args.sizes {
            true => Nodes::read(s, &conn, pick, &args.slugs, true).await?,
            false => (None, Vec::new()),
        };
        return prometheus(&conn, args, latest, placed).await;
    }
    // On Citus (home, or a server tenants live on), where each tenant lives: one query per
    // coordinator for all of its tenants, and with --sizes one more for their sizes, read
    // first: refused before anything is shown when no place is a coordinator. A server
    // that cannot be read is named below, with the tenants whose schemas could not be
    // checked there (and with --sizes as the one whose sizes could not be read).
    let (nodes, unread) = Nodes::read(s, &conn, pick, &args.slugs, args.sizes).await?;
    let unread = if args.sizes { unread } else { Vec::new() };
    let nodes = nodes.as_ref();
    let shared = match &shared_set {
        Some(sh) => Some(shared_row(&mut conn, sh).await?),
        None => None,
    };
    // The shared schema fails --check when it has pending migrations or a diverged history.
    let shared_behind = shared
        .as_ref()
        .is_some_and(|r| r.pending > 0 || r.error.is_some());
    if let (Some(r), false) = (&shared, s.json()) {
        crate::outln!("{}", escape_line(&r.line()));
    }
    let mut fleet = Fleet::new(&set, latest, args.all && !s.json(), nodes);
    let unreachable = if !args.slugs.is_empty() {
        let mut tenants = pick_tenants(
            &conn,
            &args.slugs,
            args.select.selector.as_ref(),
            "nothing was shown",
        )
        .await?;
        let unreachable = s.check_schemas_elsewhere(&mut tenants).await;
        let mut doc = s.json().then(|| begin_document(latest, shared.as_ref()));
        for t in tenants {
            if let Some(doc) = &mut doc {
                doc.item(&row(&t, &set, latest, nodes));
            }
            fleet.add(t);
        }
        if let Some(doc) = doc {
            fleet.end_document(doc);
        }
        unreachable
    } else if s.json() {
        let home_db = s.home_database().to_string();
        registry::begin_snapshot(&conn).await?;
        // Tenants elsewhere first (their schemas are checked where they live), then every
        // row written as it arrives, in slug order, from the same snapshot.
        let mut far = registry::elsewhere(&conn, pick, &[]).await?;
        let unreachable = s.check_schemas_elsewhere(&mut far).await;
        let mut far: HashMap<String, Tenant> =
            far.into_iter().map(|t| (t.slug.clone(), t)).collect();
        let mut doc = begin_document(latest, shared.as_ref());
        registry::for_each_tenant(&conn, pick, |t| {
            let t = match far.remove(&t.slug) {
                Some(checked) if !t.is_home(&home_db) => checked,
                _ => t,
            };
            doc.item(&row(&t, &set, latest, nodes));
            fleet.add(t);
        })
        .await?;
        fleet.end_document(doc);
        registry::end_snapshot(&conn).await?;
        unreachable
    } else {
        // Tenants elsewhere are held back until their schemas are checked where they live.
        let home_db = s.home_database().to_string();
        let mut far = Vec::new();
        registry::for_each_tenant(&conn, pick, |t| {
            if t.is_home(&home_db) {
                fleet.add(t)
            } else {
                far.push(t)
            }
        })
        .await?;
        let unreachable = s.check_schemas_elsewhere(&mut far).await;
        for t in far {
            fleet.add(t);
        }
        unreachable
    };
    if !s.json() {
        fleet.print_text();
    }
    for e in unread.iter().chain(&unreachable) {
        crate::errln!("error: {e}");
    }
    let failed = !unreachable.is_empty()
        || !unread.is_empty()
        || (args.check && (shared_behind || fleet.behind > 0));
    Ok(if failed { FAILED } else { OK })
}

/// `--format prometheus`: each tenant's version (streamed), then tenants per version and
/// state, the latest version, and how many are behind; with `--sizes` (`placed`: the
/// nodes and sizes, and the places that could not be read), tenants and bytes per node.
async fn prometheus(
    conn: &deadpool_postgres::Object,
    args: &StatusArgs,
    latest: i64,
    placed: (Option<Nodes>, Vec<String>),
) -> Result<u8> {
    let (placed, unread) = placed;
    use crate::output::prometheus::{header, sample};
    let mut groups: BTreeMap<(i64, String), usize> = BTreeMap::new();
    let mut n_behind = 0usize;
    let mut first = true;
    let mut by_node = placed
        .as_ref()
        .map(|n| NodeCounts::with_workers_down(&n.workers(), &n.unreachable_workers()));
    let mut each = |t: Tenant| {
        if let (Some(c), Some(nodes)) = (&mut by_node, &placed) {
            c.add(&t.server, nodes.get(&t), nodes.node_bytes(&t));
        }
        if first {
            crate::outln!(
                "{}",
                header(
                    "tenantctl_tenant_version",
                    "gauge",
                    "The highest migration applied to each tenant, with its state."
                )
            );
            first = false;
        }
        crate::outln!(
            "{}",
            sample(
                "tenantctl_tenant_version",
                &[("tenant", &t.slug), ("state", &t.state)],
                t.version
            )
        );
        n_behind += usize::from(behind(&t, latest));
        *groups.entry((t.version, t.state)).or_default() += 1;
    };
    if args.slugs.is_empty() {
        let pick = args
            .select
            .selector
            .as_ref()
            .map_or(Pick::All, Pick::Selected);
        registry::for_each_tenant(conn, pick, &mut each).await?;
    } else {
        for t in pick_tenants(conn, &args.slugs, None, "nothing was shown").await? {
            each(t);
        }
    }
    crate::outln!(
        "{}",
        header(
            "tenantctl_tenants",
            "gauge",
            "Tenants per migration version and state."
        )
    );
    for ((v, state), n) in &groups {
        let v = v.to_string();
        crate::outln!(
            "{}",
            sample("tenantctl_tenants", &[("version", &v), ("state", state)], n)
        );
    }
    crate::outln!(
        "{}\n{}",
        header(
            "tenantctl_latest_version",
            "gauge",
            "The latest version of the migrations folder."
        ),
        sample("tenantctl_latest_version", &[], latest)
    );
    crate::outln!(
        "{}\n{}",
        header(
            "tenantctl_tenants_not_current",
            "gauge",
            "Tenants not active (or suspended) at the latest version."
        ),
        sample("tenantctl_tenants_not_current", &[], n_behind)
    );
    if let Some(c) = &by_node {
        node_metrics(c);
    }
    for e in &unread {
        crate::errln!("error: {e}");
    }
    Ok(if !unread.is_empty() || (args.check && n_behind > 0) {
        FAILED
    } else {
        OK
    })
}

/// `status --sizes --format prometheus`: tenants and their bytes per Citus worker node,
/// labelled with the server whose worker it is (`node=""`, `server=""`: the tenants
/// without one).
fn node_metrics(c: &NodeCounts) {
    use crate::output::prometheus::{header, sample};
    let nodes = c.json();
    for (name, help, get) in [
        (
            "tenantctl_node_tenants",
            "Tenants per Citus worker node (node=\"\": tenants without one).",
            (|n: &NodeCount| Some(n.tenants as i64)) as fn(&NodeCount) -> Option<i64>,
        ),
        (
            "tenantctl_node_tenant_bytes",
            "The size of the tenants' shards per Citus worker node (tables, indexes, TOAST).",
            |n: &NodeCount| n.bytes,
        ),
    ] {
        crate::outln!("{}", header(name, "gauge", help));
        for n in &nodes {
            let (node, server) = (n.node.unwrap_or_default(), n.server.unwrap_or_default());
            let labels = [("node", node), ("server", server)];
            // A node whose bytes are unknown (it did not answer) has no sample: not 0.
            if let Some(v) = get(&n.count) {
                crate::outln!("{}", sample(name, &labels, v));
            }
        }
    }
}

/// Begins `status --format json` on stdout: `latest_version` and `shared`, then the
/// `tenants` array, one [`Row`] at a time.
fn begin_document(
    latest: i64,
    shared: Option<&SharedRow>,
) -> JsonStream<std::io::BufWriter<crate::output::Stdout>> {
    JsonStream::stdout(
        &Head {
            latest_version: latest,
            shared,
        },
        "tenants",
    )
}

fn row<'a>(t: &'a Tenant, set: &MigrationSet, latest: i64, nodes: Option<&'a Nodes>) -> Row<'a> {
    Row {
        slug: &t.slug,
        schema: &t.schema,
        state: &t.state,
        server: &t.server,
        database: &t.database,
        node: nodes.map(|n| n.get(t)),
        bytes: nodes.and_then(|n| n.bytes(t)),
        version: t.version,
        pending: set.pending_count(t.version, latest),
        last_error: t.last_error.as_deref(),
        migrated_at: t.migrated_at.as_deref(),
        schema_exists: t.schema_exists,
        ahead: ahead(t, latest),
    }
}

/// The fields of `status --format json` before its `tenants` array (written as a stream).
#[derive(Serialize)]
struct Head<'a> {
    latest_version: i64,
    /// Present only when shared migrations are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared: Option<&'a SharedRow>,
}

/// One tenant of `status --format json`, in the contract's order.
#[derive(Serialize)]
struct Row<'a> {
    slug: &'a str,
    schema: &'a str,
    state: &'a str,
    /// Where it lives (docs/placements.md).
    server: &'a str,
    database: &'a str,
    /// On a Citus coordinator only: the worker node (`host:port`) holding the tenant's
    /// schema, null when it is not distributed (or has no table yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Option<&'a str>>,
    /// With `--sizes` only: the bytes of the tenant's shards (tables, indexes, TOAST) on
    /// its node, null when it has no shard (not distributed, or no table yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<Option<i64>>,
    version: i64,
    pending: usize,
    last_error: Option<&'a str>,
    migrated_at: Option<&'a str>,
    schema_exists: bool,
    /// At a version above the folder's latest (the folder lacks what the tenant has).
    ahead: bool,
}

/// The fields of `status --sizes --format json` after its `tenants` array.
#[derive(Serialize)]
struct Tail<'a> {
    nodes: Vec<NodeJson<'a>>,
}

/// The shared schema's line of `status` (`shared` in its JSON document).
#[derive(Serialize)]
struct SharedRow {
    schema: String,
    version: i64,
    latest_version: i64,
    pending: usize,
    /// Why the next migrate would refuse it (its history differs from the files).
    error: Option<String>,
}

impl SharedRow {
    fn line(&self) -> String {
        let head = format!(
            "shared schema {}: version {}, latest {}, {} pending",
            self.schema, self.version, self.latest_version, self.pending
        );
        match &self.error {
            Some(e) => format!("{head}; refused: {e}"),
            None => head,
        }
    }
}

async fn shared_row(conn: &mut deadpool_postgres::Object, sh: &SharedSet) -> Result<SharedRow> {
    let st = shared::state(conn, sh).await?;
    Ok(SharedRow {
        schema: sh.schema.clone(),
        version: st.version,
        latest_version: sh.set.latest(),
        pending: st.pending(),
        error: st.diverged().map(str::to_string),
    })
}

/// Whether the tenant is at a version the migrations folder does not reach.
fn ahead(t: &Tenant, latest: i64) -> bool {
    t.version > latest
}

/// Not at the folder's latest version: behind it, or ahead of it (the folder lacks
/// migrations the tenant has: an older release's folder). Either fails --check. A
/// suspended tenant at the latest version is current: not serving is deliberate.
fn behind(t: &Tenant, latest: i64) -> bool {
    let settled = t.state == "active" || (t.state == "suspended" && t.last_error.is_none());
    !settled || t.version != latest || !t.schema_exists
}

/// What text status knows about the tenants seen so far: counts, and the first rows.
struct Fleet<'a> {
    set: &'a MigrationSet,
    /// On Citus: each distributed schema's node, shown in a column of its own.
    nodes: Option<&'a Nodes>,
    latest: i64,
    /// `--all`: each row is printed as it arrives.
    stream_rows: bool,
    first: Vec<Tenant>,
    n: usize,
    behind: usize,
    ahead: usize,
    by_version: BTreeMap<i64, usize>,
    by_state: BTreeMap<String, usize>,
    /// The tenant furthest behind (lowest version below the latest), first by slug.
    oldest: Option<(i64, String)>,
    errors: HashMap<String, (usize, Vec<String>)>,
    /// Failed tenants whose error is not among the kept groups.
    other_errors: usize,
    /// On Citus: tenants (and with `--sizes` their bytes) per worker node.
    by_node: NodeCounts,
    /// `--sizes`: the bytes were read (they are in `nodes`).
    sizes: bool,
}

/// Tenants per Citus node (`host:port`, from the node map status reads anyway), and how many
/// have none (a local schema, or no table yet); with `--sizes`, their bytes too, and every
/// worker listed, those without a tenant too. By server and node: two coordinators' workers
/// stay apart even when they have the same `host:port`.
#[derive(Default)]
struct NodeCounts {
    nodes: BTreeMap<(String, String), NodeCount>,
    none: NodeCount,
    sizes: bool,
}

/// The tenants on one node, and their bytes (`--sizes`): `None` (null) when unknown, the
/// node (or a node holding one of its tenants' shards) not having answered.
#[derive(Clone, Copy, Serialize)]
struct NodeCount {
    tenants: usize,
    bytes: Option<i64>,
}

impl Default for NodeCount {
    fn default() -> NodeCount {
        NodeCount {
            tenants: 0,
            bytes: Some(0),
        }
    }
}

/// One node of `status --sizes --format json`'s `nodes` (`node` and `server` null: tenants
/// without one).
#[derive(Serialize)]
struct NodeJson<'a> {
    /// The server whose coordinator has this worker (`home`, or a `[servers.NAME]`).
    server: Option<&'a str>,
    node: Option<&'a str>,
    #[serde(flatten)]
    count: NodeCount,
}

impl NodeCounts {
    /// Counts with sizes, each of `workers` (server, `host:port`) at zero to begin with.
    fn with_workers(workers: &[(String, String)]) -> NodeCounts {
        NodeCounts {
            nodes: workers
                .iter()
                .map(|w| (w.clone(), NodeCount::default()))
                .collect(),
            none: NodeCount::default(),
            sizes: true,
        }
    }

    /// `with_workers`, and each of `down` (server, node that did not answer the size
    /// query) listed with its bytes unknown, not 0.
    fn with_workers_down(workers: &[(String, String)], down: &[(String, String)]) -> NodeCounts {
        let mut c = NodeCounts::with_workers(workers);
        for d in down {
            c.nodes.entry(d.clone()).or_default().bytes = None;
        }
        c
    }

    /// One tenant living on `server`, on `node` (none: not distributed, or no table yet),
    /// of `bytes` (`None`: unknown, and so is the node's sum).
    fn add(&mut self, server: &str, node: Option<&str>, bytes: Option<i64>) {
        let count = match node {
            Some(n) => self
                .nodes
                .entry((server.to_string(), n.to_string()))
                .or_default(),
            None => &mut self.none,
        };
        count.tenants += 1;
        count.bytes = count.bytes.zip(bytes).map(|(a, b)| a + b);
    }

    /// `host:port: N, ..., no node: K` (the last only when some tenant has none; a worker
    /// of another server than home as `host:port (NAME)`); with sizes, each count followed
    /// by its size (`host:port: N (16 MB)`).
    fn line(&self) -> String {
        let part = |name: &str, c: &NodeCount| match self.sizes {
            true => match c.bytes {
                Some(b) => format!("{name}: {} ({})", c.tenants, size(b)),
                None => format!("{name}: {} (size unknown)", c.tenants),
            },
            false => format!("{name}: {}", c.tenants),
        };
        let mut parts: Vec<String> = self
            .nodes
            .iter()
            .map(|((server, n), c)| match server.as_str() {
                HOME_SERVER => part(&escape_line(n), c),
                _ => part(&escape_line(&format!("{n} ({server})")), c),
            })
            .collect();
        if self.none.tenants > 0 || parts.is_empty() {
            parts.push(part("no node", &self.none));
        }
        parts.join(", ")
    }

    /// The nodes for JSON, then the tenants without one (when there are).
    fn json(&self) -> Vec<NodeJson<'_>> {
        let mut out: Vec<NodeJson> = self
            .nodes
            .iter()
            .map(|((server, n), c)| NodeJson {
                server: Some(server),
                node: Some(n),
                count: *c,
            })
            .collect();
        if self.none.tenants > 0 {
            out.push(NodeJson {
                server: None,
                node: None,
                count: self.none,
            });
        }
        out
    }
}

impl<'a> Fleet<'a> {
    fn new(
        set: &'a MigrationSet,
        latest: i64,
        stream_rows: bool,
        nodes: Option<&'a Nodes>,
    ) -> Fleet<'a> {
        let sizes = nodes.is_some_and(Nodes::has_sizes);
        Fleet {
            set,
            nodes,
            latest,
            stream_rows,
            first: Vec::new(),
            n: 0,
            behind: 0,
            ahead: 0,
            by_version: BTreeMap::new(),
            by_state: BTreeMap::new(),
            oldest: None,
            errors: HashMap::new(),
            other_errors: 0,
            by_node: match (nodes, sizes) {
                (Some(n), true) => {
                    NodeCounts::with_workers_down(&n.workers(), &n.unreachable_workers())
                }
                _ => NodeCounts::default(),
            },
            sizes,
        }
    }

    /// Ends `status --format json`'s document; with `--sizes`, a `nodes` array after the
    /// tenants: each worker's tenants and bytes (of the tenants shown).
    fn end_document(&self, doc: JsonStream<std::io::BufWriter<crate::output::Stdout>>) {
        match self.sizes {
            true => {
                doc.end_with(&Tail {
                    nodes: self.by_node.json(),
                });
            }
            false => {
                doc.end();
            }
        }
    }

    fn add(&mut self, t: Tenant) {
        self.n += 1;
        self.behind += usize::from(behind(&t, self.latest));
        self.ahead += usize::from(ahead(&t, self.latest));
        *self.by_version.entry(t.version).or_default() += 1;
        match self.by_state.get_mut(&t.state) {
            Some(c) => *c += 1,
            None => {
                self.by_state.insert(t.state.clone(), 1);
            }
        }
        if t.version < self.latest && self.oldest.as_ref().is_none_or(|(v, _)| t.version < *v) {
            self.oldest = Some((t.version, t.slug.clone()));
        }
        if let Some(e) = &t.last_error {
            self.add_error(e, &t.slug);
        }
        if let Some(nodes) = self.nodes {
            self.by_node
                .add(&t.server, nodes.get(&t), nodes.node_bytes(&t));
        }
        if self.stream_rows {
            if self.n == 1 {
                let header = with_node(HEADER.map(str::to_string).to_vec(), self.nodes, |_| {
                    "node".to_string()
                });
                crate::outln!("{}", line(&header, self.nodes.is_some()));
            }
            let row = cells(&t, self.set, self.latest, self.nodes);
            crate::outln!("{}", line(&row, self.nodes.is_some()));
        } else if self.first.len() <= FULL_TABLE_LIMIT {
            self.first.push(t);
        }
    }

    fn add_error(&mut self, error: &str, slug: &str) {
        // Grouped by the first line: PostgreSQL's DETAIL and context lines often name the
        // tenant, the message itself rarely does.
        let key = error.lines().next().unwrap_or_default();
        if let Some((n, examples)) = self.errors.get_mut(key) {
            *n += 1;
            if examples.len() < EXAMPLES {
                examples.push(slug.to_string());
            }
        } else if self.errors.len() < ERROR_GROUPS_KEPT {
            self.errors
                .insert(key.to_string(), (1, vec![slug.to_string()]));
        } else {
            self.other_errors += 1;
        }
    }

    fn print_text(&self) {
        if !self.stream_rows {
            if self.n <= FULL_TABLE_LIMIT {
                print_table(&self.first, self.set, self.latest, self.nodes);
            } else {
                self.print_summary();
            }
        }
        // The summary has it already.
        if self.sizes && (self.stream_rows || self.n <= FULL_TABLE_LIMIT) {
            crate::outln!("by node: {}", self.by_node.line());
        }
        let ahead_note = if self.ahead > 0 {
            format!(
                " ({} ahead of the migrations folder {}: it lacks their versions; \
                 is it an older release's folder?)",
                self.ahead,
                self.set.dir.display()
            )
        } else {
            String::new()
        };
        crate::outln!(
            "{}, latest version {}, {} not active at the latest version{ahead_note}",
            count(self.n, "tenant"),
            self.latest,
            self.behind
        );
    }

    fn print_summary(&self) {
        let versions: Vec<String> = self
            .by_version
            .iter()
            .rev()
            .map(|(v, n)| format!("{v}: {n}"))
            .collect();
        crate::outln!("by version: {}", versions.join(", "));
        let states: Vec<String> = self
            .by_state
            .iter()
            .map(|(s, n)| format!("{}: {n}", escape_line(s)))
            .collect();
        crate::outln!("by state:   {}", states.join(", "));
        if self.nodes.is_some() {
            crate::outln!("by node:    {}", self.by_node.line());
        }
        if let Some((v, slug)) = &self.oldest {
            crate::outln!(
                "oldest pending: {} at version {v} ({} pending)",
                escape_line(slug),
                self.set.pending_count(*v, self.latest)
            );
        }
        let mut groups: Vec<(&String, &(usize, Vec<String>))> = self.errors.iter().collect();
        groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        if !groups.is_empty() {
            crate::outln!(
                "failures by error ({} distinct{}):",
                groups.len(),
                if self.other_errors > 0 {
                    format!(", {} more tenants with other errors", self.other_errors)
                } else {
                    String::new()
                }
            );
            for (msg, (n, examples)) in groups.into_iter().take(TOP_ERRORS) {
                crate::outln!(
                    "  {n:>6}  {}  (e.g. {})",
                    escape_line(msg),
                    escape_line(&examples.join(", "))
                );
            }
        }
        crate::outln!("(tenantctl status --all lists every tenant; -l SELECTOR picks some)");
    }
}

const HEADER: [&str; 8] = [
    "tenant",
    "schema",
    "state",
    "server",
    "version",
    "pending",
    "migrated at",
    "last error",
];
/// Column widths of `--all`'s streamed rows: a value longer than its column pushes the
/// rest of its row right rather than making every row wait for the widest.
const WIDTHS: [usize; 7] = [24, 31, 10, 8, 7, 7, 20];
/// The same with Citus's node column (`host:port`) after the server's.
const WIDTHS_NODE: [usize; 8] = [24, 31, 10, 8, 21, 7, 7, 20];

/// `cells` with the node column inserted after the server's when on Citus.
fn with_node(
    mut cells: Vec<String>,
    nodes: Option<&Nodes>,
    node: impl FnOnce(&Nodes) -> String,
) -> Vec<String> {
    if let Some(n) = nodes {
        cells.insert(4, node(n));
    }
    cells
}

fn line(cells: &[String], node_column: bool) -> String {
    let widths: &[usize] = if node_column { &WIDTHS_NODE } else { &WIDTHS };
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = escape_line(c);
        match widths.get(i) {
            Some(w) => out.push_str(&format!("{c:<w$}  ")),
            None => out.push_str(&c),
        }
    }
    out.trim_end().to_string()
}

fn cells(x: &Tenant, set: &MigrationSet, latest: i64, nodes: Option<&Nodes>) -> Vec<String> {
    let state = if x.schema_exists {
        x.state.clone()
    } else {
        format!("{} (schema missing)", x.state)
    };
    let pending = if ahead(x, latest) {
        "ahead".to_string()
    } else {
        set.pending_count(x.version, latest).to_string()
    };
    let row = vec![
        x.slug.clone(),
        x.schema.clone(),
        state,
        x.server.clone(),
        x.version.to_string(),
        pending,
        x.migrated_at.clone().unwrap_or_default(),
        x.last_error.clone().unwrap_or_default(),
    ];
    with_node(row, nodes, |n| n.get(x).unwrap_or_default().to_string())
}

fn print_table(tenants: &[Tenant], set: &MigrationSet, latest: i64, nodes: Option<&Nodes>) {
    if tenants.is_empty() {
        return;
    }
    let header = with_node(HEADER.map(str::to_string).to_vec(), nodes, |_| {
        "node".to_string()
    });
    let mut t = table(header.iter().map(String::as_str).collect());
    for x in tenants {
        t.add_row(cells(x, set, latest, nodes));
    }
    crate::outln!("{t}");
}

#[cfg(test)]
mod tests {
    use super::NodeCounts;

    #[test]
    fn tenants_per_node_count_each_node_and_those_without_one() {
        let mut c = NodeCounts::default();
        for n in [Some("w2:5432"), Some("w1:5432"), None, Some("w2:5432")] {
            c.add("home", n, Some(0));
        }
        assert_eq!(c.line(), "w1:5432: 1, w2:5432: 2, no node: 1");
        let mut c = NodeCounts::default();
        c.add("home", Some("w1:5432"), Some(0));
        assert_eq!(c.line(), "w1:5432: 1");
        assert_eq!(NodeCounts::default().line(), "no node: 0");
    }

    #[test]
    fn sizes_per_node_add_up_and_list_workers_without_a_tenant() {
        let workers = [
            ("home".to_string(), "w1:5432".to_string()),
            ("home".to_string(), "w2:5432".to_string()),
        ];
        let mut c = NodeCounts::with_workers(&workers);
        c.add("home", Some("w1:5432"), Some(16_384));
        c.add("home", Some("w1:5432"), Some(8192));
        assert_eq!(c.line(), "w1:5432: 2 (24 kB), w2:5432: 0 (0 bytes)");
        c.add("home", None, Some(0));
        assert_eq!(
            serde_json::to_string(&c.json()).unwrap(),
            r#"[{"server":"home","node":"w1:5432","tenants":2,"bytes":24576},{"server":"home","node":"w2:5432","tenants":0,"bytes":0},{"server":null,"node":null,"tenants":1,"bytes":0}]"#
        );
    }

    #[test]
    fn a_node_that_did_not_answer_has_its_bytes_unknown_not_zero() {
        let workers = [
            ("home".to_string(), "w1:5432".to_string()),
            ("home".to_string(), "w2:5432".to_string()),
        ];
        let down = [("home".to_string(), "w2:5432".to_string())];
        let mut c = NodeCounts::with_workers_down(&workers, &down);
        c.add("home", Some("w1:5432"), Some(100));
        c.add("home", Some("w2:5432"), None);
        assert_eq!(
            c.line(),
            "w1:5432: 1 (100 bytes), w2:5432: 1 (size unknown)"
        );
        assert_eq!(
            serde_json::to_string(&c.json()).unwrap(),
            r#"[{"server":"home","node":"w1:5432","tenants":1,"bytes":100},{"server":"home","node":"w2:5432","tenants":1,"bytes":null}]"#
        );
        // Down with none of the tenants shown: still unknown.
        let c = NodeCounts::with_workers_down(&workers, &down);
        assert_eq!(c.line(), "w1:5432: 0 (0 bytes), w2:5432: 0 (size unknown)");
    }

    #[test]
    fn the_same_node_name_on_two_servers_is_two_nodes() {
        let workers = [("c".to_string(), "w1:5432".to_string())];
        let mut c = NodeCounts::with_workers(&workers);
        c.add("home", Some("w1:5432"), Some(100));
        c.add("c", Some("w1:5432"), Some(10));
        c.add("c", Some("w1:5432"), Some(5));
        assert_eq!(
            c.line(),
            "w1:5432 (c): 2 (15 bytes), w1:5432: 1 (100 bytes)"
        );
        assert_eq!(
            serde_json::to_string(&c.json()).unwrap(),
            r#"[{"server":"c","node":"w1:5432","tenants":2,"bytes":15},{"server":"home","node":"w1:5432","tenants":1,"bytes":100}]"#
        );
    }
}

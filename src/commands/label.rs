//! `tenantctl label SLUG key=value... key-`: sets and removes a tenant's labels in one
//! statement. Labels feed selectors (`-l`) and rollout waves.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use crate::cli::LabelArgs;
use crate::commands::session::Session;
use crate::domain::exit::{bad_input, OK};
use crate::domain::selector::LabelEdit;
use crate::output::{escape_line, print_json};
use crate::registry;

pub async fn run(s: &Session, args: &LabelArgs) -> Result<u8> {
    // The edits in order collapse to removals then sets: a key set after being removed is
    // set, a key removed after being set is removed.
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for e in &args.edits {
        match e {
            LabelEdit::Set(k, v) => {
                remove.retain(|r| r != k);
                set.insert(k.clone(), v.clone());
            }
            LabelEdit::Remove(k) => {
                set.remove(k);
                remove.push(k.clone());
            }
        }
    }
    let (_pool, conn) = s.connect(1).await?;
    let Some(labels) = registry::edit_labels(&conn, &args.slug, &set, &remove).await? else {
        return Err(bad_input(format!(
            "unknown tenant {}; no label was changed (see tenantctl list)",
            args.slug
        )));
    };
    if s.json() {
        print_json(&json!({"slug": args.slug, "labels": labels}));
    } else {
        let shown: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}={}", escape_line(k), escape_line(v)))
            .collect();
        crate::outln!(
            "{}: {}",
            args.slug,
            if shown.is_empty() {
                "no labels".to_string()
            } else {
                shown.join(",")
            }
        );
    }
    Ok(OK)
}

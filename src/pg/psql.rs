//! Starting `psql` inside one tenant: its schema as search_path and, with per-tenant roles,
//! its role, set as startup options (PGOPTIONS); the connection and the password through
//! the environment (`dump::command`), never the command line, which other users can read.

use std::process::Command;

use anyhow::Result;

use crate::domain::exit::bad_input;
use crate::domain::names::quote_ident;
use crate::pg::connect::Target;
use crate::pg::dump::{self, Tool};

/// Finds psql (`$TENANTCTL_PSQL`, Debian's /usr/lib/postgresql/*/bin, PATH); exit 2 when
/// there is none.
pub fn find() -> Result<Tool> {
    dump::find_tool("psql").map_err(|e| {
        bad_input(format!(
            "{e}; tenantctl psql runs the psql program (Debian: apt-get install postgresql-client)"
        ))
    })
}

/// psql connected to `dbname` of `target`, entering `schema` (then pg_temp) and, when
/// given, `role`; `args` are psql's own (`-c`, `-f`, ...).
pub fn command(
    tool: &Tool,
    target: &Target,
    dbname: &str,
    schema: &str,
    role: Option<&str>,
    args: &[String],
) -> Command {
    let mut cmd = dump::command(tool, target, dbname);
    cmd.env("PGOPTIONS", options(schema, role));
    cmd.env("PGAPPNAME", "tenantctl psql");
    cmd.args(args);
    cmd
}

/// `-c search_path="tenant_acme",pg_temp -c role=tenant_acme`. The server splits options
/// at whitespace, with backslash escaping the next character; the search_path value is a
/// list of quoted identifiers, the role value a plain name.
pub fn options(schema: &str, role: Option<&str>) -> String {
    let mut o = format!(
        "-c search_path={}",
        escape(&format!("{},pg_temp", quote_ident(schema)))
    );
    if let Some(r) = role {
        o.push_str(&format!(" -c role={}", escape(r)));
    }
    o
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_pin_the_schema_and_role() {
        assert_eq!(
            options("tenant_st-marys", Some("tenant_st-marys")),
            "-c search_path=\"tenant_st-marys\",pg_temp -c role=tenant_st-marys"
        );
        assert_eq!(options("t", None), "-c search_path=\"t\",pg_temp");
        assert_eq!(escape("a b\\c"), "a\\ b\\\\c");
    }
}

//! Tenant labels and label selectors, with Kubernetes' rules and grammar, so operators who
//! know `kubectl -l` know these: `ring=beta,plan!=free`, `region in (eu,us)`,
//! `tier notin (free)`, `canary`, `!legacy`. Pure: parsing and validation only; the
//! registry turns a `Selector` into one query (`registry::selected`).

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a selector; all of them must hold (a comma is AND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also true when the key is absent (as in Kubernetes).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: also true when the key is absent.
    NotIn(String, Vec<String>),
    /// `key`: the label is set, whatever its value.
    Exists(String),
    /// `!key`: the label is not set.
    NotExists(String),
}

/// A parsed `-l/--selector`: every requirement must hold. Empty (from `*`) selects every
/// tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
    /// The text the operator wrote, for messages and reports.
    pub text: String,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/` (at most 253 characters),
/// then a name of 1 to 63 characters of `A-Z a-z 0-9 - _ .`, beginning and ending with a
/// letter or digit (Kubernetes' rule).
pub fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!(
                "label key '{key}': its prefix before '/' must be a DNS subdomain (lower-case \
                 letters, digits, '-' and '.', at most 253 characters), like example.com/ring"
            ));
        }
    }
    if !is_name(name) {
        return Err(format!(
            "label key '{key}' must be 1 to 63 characters of letters, digits, '-', '_' and '.', \
             beginning and ending with a letter or digit (optionally after a prefix like example.com/)"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or like a key's name (at most 63 characters).
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value '{value}' of '{key}' must be empty or 1 to 63 characters of letters, \
             digits, '-', '_' and '.', beginning and ending with a letter or digit"
        ))
    }
}

fn is_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// One argument of `tenantctl label` or `create --label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelEdit {
    Set(String, String),
    Remove(String),
}

/// Parses `key=value` (set) or `key-` (remove), validating key and value.
pub fn parse_label_edit(arg: &str) -> Result<LabelEdit, String> {
    if let Some((k, v)) = arg.split_once('=') {
        validate_key(k)?;
        validate_value(k, v)?;
        return Ok(LabelEdit::Set(k.to_string(), v.to_string()));
    }
    if let Some(k) = arg.strip_suffix('-') {
        validate_key(k)?;
        return Ok(LabelEdit::Remove(k.to_string()));
    }
    Err(format!(
        "'{arg}' is not a label edit: write key=value to set a label or key- to remove it"
    ))
}

/// Parses `key=value` only (`create --label`).
pub fn parse_label(arg: &str) -> Result<(String, String), String> {
    match parse_label_edit(arg)? {
        LabelEdit::Set(k, v) => Ok((k, v)),
        LabelEdit::Remove(_) => Err(format!("'{arg}' is not a label: write key=value")),
    }
}

/// The labels after applying `edits` in order to `current`.
pub fn apply_edits(
    mut current: BTreeMap<String, String>,
    edits: &[LabelEdit],
) -> BTreeMap<String, String> {
    for e in edits {
        match e {
            LabelEdit::Set(k, v) => {
                current.insert(k.clone(), v.clone());
            }
            LabelEdit::Remove(k) => {
                current.remove(k);
            }
        }
    }
    current
}

/// Parses a selector. `*` (or `*` alone in a `--waves` list) selects every tenant.
pub fn parse(text: &str) -> Result<Selector, String> {
    let trimmed = text.trim();
    let mut sel = Selector {
        requirements: Vec::new(),
        text: trimmed.to_string(),
    };
    if trimmed == "*" {
        return Ok(sel);
    }
    if trimmed.is_empty() {
        return Err(
            "the selector is empty: write requirements like ring=beta,plan!=free, or * for \
                    every tenant"
                .into(),
        );
    }
    for part in split_top_level(trimmed)? {
        sel.requirements.push(requirement(part.trim(), trimmed)?);
    }
    Ok(sel)
}

/// Splits at the commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut parts) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("selector '{s}': unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(format!("selector '{s}': unbalanced parentheses"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn requirement(part: &str, whole: &str) -> Result<Requirement, String> {
    let bad = |why: &str| {
        format!(
            "selector '{whole}': '{part}' {why}; write key=value, key!=value, key in (a,b), \
             key notin (a,b), key or !key, joined by commas"
        )
    };
    if part.is_empty() {
        return Err(bad("is empty"));
    }
    if let Some(k) = part.strip_prefix('!') {
        let k = k.trim();
        validate_key(k).map_err(|e| bad(&format!("has an invalid key ({e})")))?;
        return Ok(Requirement::NotExists(k.to_string()));
    }
    for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            validate_key(k).map_err(|e| bad(&format!("has an invalid key ({e})")))?;
            validate_value(k, v).map_err(|e| bad(&format!("has an invalid value ({e})")))?;
            let (k, v) = (k.to_string(), v.to_string());
            return Ok(if negated {
                Requirement::NotEquals(k, v)
            } else {
                Requirement::Equals(k, v)
            });
        }
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let Some(body) = part[open + 1..].trim().strip_suffix(')') else {
            return Err(bad("has text after its closing parenthesis"));
        };
        let (k, negated) = if let Some(k) = head.strip_suffix(" notin") {
            (k.trim(), true)
        } else if let Some(k) = head.strip_suffix(" in") {
            (k.trim(), false)
        } else {
            return Err(bad("has a set without 'in' or 'notin' before it"));
        };
        validate_key(k).map_err(|e| bad(&format!("has an invalid key ({e})")))?;
        let mut values = Vec::new();
        for v in body.split(',') {
            let v = v.trim();
            validate_value(k, v).map_err(|e| bad(&format!("has an invalid value ({e})")))?;
            values.push(v.to_string());
        }
        let k = k.to_string();
        return Ok(if negated {
            Requirement::NotIn(k, values)
        } else {
            Requirement::In(k, values)
        });
    }
    validate_key(part).map_err(|e| bad(&format!("is not a requirement ({e})")))?;
    Ok(Requirement::Exists(part.to_string()))
}

/// Whether `labels` satisfy the selector: the same rules as the registry's query, for
/// callers that already hold the rows (and to test the rules without a server).
pub fn matches(sel: &Selector, labels: &BTreeMap<String, String>) -> bool {
    sel.requirements.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels.get(k) == Some(v),
        Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        Requirement::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
        Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|x| vs.contains(x)),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::NotExists(k) => !labels.contains_key(k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_kubernetes_grammar() {
        let s =
            parse("ring=beta, plan!=free,region in (eu, us),tier notin (x),canary,!legacy,a==b")
                .unwrap();
        assert_eq!(
            s.requirements,
            vec![
                Requirement::Equals("ring".into(), "beta".into()),
                Requirement::NotEquals("plan".into(), "free".into()),
                Requirement::In("region".into(), vec!["eu".into(), "us".into()]),
                Requirement::NotIn("tier".into(), vec!["x".into()]),
                Requirement::Exists("canary".into()),
                Requirement::NotExists("legacy".into()),
                Requirement::Equals("a".into(), "b".into()),
            ]
        );
        assert!(parse("*").unwrap().requirements.is_empty());
        assert_eq!(
            parse("example.com/ring=").unwrap().requirements,
            vec![Requirement::Equals("example.com/ring".into(), "".into())]
        );
    }

    #[test]
    fn malformed_selectors_say_what_is_allowed() {
        for bad in [
            "",
            "ring=beta,",
            "ring in (a",
            "ring in a)",
            "ring (a)",
            "ring=be ta",
            "-ring",
            "ring=beta;drop",
            "x in (a))",
            "Ring/x=1",
            &format!("{}=1", "k".repeat(64)),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("selector") || e.contains("label"), "{bad}: {e}");
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let l = labels(&[("ring", "beta"), ("plan", "pro")]);
        let yes = |s: &str| matches(&parse(s).unwrap(), &l);
        assert!(yes("ring=beta"));
        assert!(yes("ring==beta,plan!=free"));
        assert!(yes("region!=eu"), "!= matches an absent key");
        assert!(yes("region notin (eu)"), "notin matches an absent key");
        assert!(!yes("region in (eu)"));
        assert!(yes("plan in (pro,enterprise)"));
        assert!(yes("ring,!legacy"));
        assert!(!yes("!ring"));
        assert!(yes("*"));
    }

    #[test]
    fn label_edits() {
        assert_eq!(
            parse_label_edit("ring=beta"),
            Ok(LabelEdit::Set("ring".into(), "beta".into()))
        );
        assert_eq!(
            parse_label_edit("ring-"),
            Ok(LabelEdit::Remove("ring".into()))
        );
        assert!(parse_label_edit("ring").is_err());
        assert!(parse_label_edit("ring=a b").is_err());
        assert!(parse_label_edit("=x").is_err());
        assert!(parse_label("ring-").is_err());
        let after = apply_edits(
            labels(&[("a", "1"), ("b", "2")]),
            &[
                LabelEdit::Remove("a".into()),
                LabelEdit::Set("c".into(), "3".into()),
            ],
        );
        assert_eq!(after, labels(&[("b", "2"), ("c", "3")]));
    }
}

//! The Prometheus text exposition format (version 0.0.4), as node_exporter's textfile
//! collector reads it: `# HELP` and `# TYPE` once per metric, then its samples.

/// Escapes a label value: backslash, double quote and newline.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HELP and TYPE lines of a metric.
pub fn header(name: &str, kind: &str, help: &str) -> String {
    format!("# HELP {name} {help}\n# TYPE {name} {kind}")
}

/// One sample: `name{k="v",...} value`.
pub fn sample(name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> String {
    if labels.is_empty() {
        return format!("{name} {value}");
    }
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
        .collect();
    format!("{name}{{{}}} {value}", l.join(","))
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples() {
        assert_eq!(
            super::sample("m", &[("tenant", "a\"b\\c\nd")], 3),
            "m{tenant=\"a\\\"b\\\\c\\nd\"} 3"
        );
        assert_eq!(super::sample("m", &[], 1), "m 1");
    }
}

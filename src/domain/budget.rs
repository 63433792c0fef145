//! `--max-failures N|N%`: how many tenants of a fleet run may fail before no new one starts.

use std::fmt;

/// A failure budget as the operator wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFailures {
    /// At most N tenants may fail.
    Count(u32),
    /// At most this percentage of the run's tenants may fail (rounded down).
    Percent(u8),
}

impl MaxFailures {
    /// How many failures a run over `total` tenants tolerates; one more stops it.
    pub fn allowed(self, total: usize) -> usize {
        match self {
            MaxFailures::Count(n) => n as usize,
            MaxFailures::Percent(p) => total * p as usize / 100,
        }
    }
}

impl fmt::Display for MaxFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxFailures::Count(n) => write!(f, "{n}"),
            MaxFailures::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses `N` (0 or more) or `N%` (0 to 100).
pub fn parse(s: &str) -> Result<MaxFailures, String> {
    let bad =
        || format!("'{s}' is not a failure budget: write a count like 3 or a percentage like 10%");
    match s.trim().strip_suffix('%') {
        Some(p) => match p.trim().parse::<u8>() {
            Ok(p) if p <= 100 => Ok(MaxFailures::Percent(p)),
            _ => Err(bad()),
        },
        None => s
            .trim()
            .parse::<u32>()
            .map(MaxFailures::Count)
            .map_err(|_| bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        assert_eq!(parse("0"), Ok(MaxFailures::Count(0)));
        assert_eq!(parse("3"), Ok(MaxFailures::Count(3)));
        assert_eq!(parse("10%"), Ok(MaxFailures::Percent(10)));
        for bad in ["", "-1", "x", "101%", "1.5", "%"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(MaxFailures::Percent(10).allowed(25), 2);
        assert_eq!(MaxFailures::Percent(10).allowed(9), 0);
        assert_eq!(MaxFailures::Count(2).allowed(1), 2);
    }
}

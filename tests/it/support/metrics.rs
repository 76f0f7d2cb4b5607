//! Reading Prometheus text exposition, as `/metrics` serves it.

use std::collections::BTreeMap;

/// One sample line of the text exposition: name, labels, value.
pub fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once("=\"").map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string())))
                .collect();
            Some((name.to_string(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of the series `name` with exactly `labels`, if exposed.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples(text).into_iter().find_map(|(n, l, v)| (n == name && l == want).then_some(v))
}

//! Best-effort line numbers for config keys (GitLab's Code Quality report places each finding on a line of
//! the file). The config crate keeps no positions, so the file text is scanned: `[[issuers]]`,
//! `[[routes]]` and `[[routes.allow]]` headers in TOML, list items under `issuers:` / `routes:` in YAML,
//! then the field's own line inside that block. Anything not found falls back to the block, then to line 1.

/// A config file's text, ready to answer "which line holds this key?".
#[derive(Debug)]
pub struct Locator<'a> {
    lines: Vec<&'a str>,
}

/// One step of a key: `routes[2]`, `allow[0]`, `claims."ref"`, `host`.
#[derive(Debug, PartialEq, Eq)]
enum Step<'k> {
    Item(&'k str, usize),
    Field(&'k str),
}

impl<'a> Locator<'a> {
    /// Over `text`, the config file's contents.
    pub fn new(text: &'a str) -> Locator<'a> {
        Locator { lines: text.lines().collect() }
    }

    /// The 1-based line of `key`, or 1 when it cannot be placed.
    pub fn line(&self, key: &str) -> usize {
        self.find(key).map_or(1, |index| index + 1)
    }

    fn find(&self, key: &str) -> Option<usize> {
        let steps = steps(key);
        let (Step::Item(section, index), rest) = (steps.first()?, &steps[1..]) else { return None };
        let (mut start, mut end) = self.item(section, *index)?;
        for step in rest {
            let found = match step {
                Step::Item(field, n) => self
                    .sub_item(section, field, *n, start, end)
                    .or_else(|| self.field(field, start, end).map(|at| (at, end))),
                Step::Field(name) => self.field(name, start, end).map(|at| (at, end)),
            };
            // A step not found: the deepest block found so far is the best answer.
            let Some(found) = found else { return Some(start) };
            (start, end) = found;
        }
        Some(start)
    }

    /// The lines of the `index`-th `[[section]]` block (TOML) or `section:` list item (YAML).
    fn item(&self, section: &str, index: usize) -> Option<(usize, usize)> {
        let header = format!("[[{section}]]");
        let toml: Vec<usize> = self.positions(|l| l.trim() == header);
        if !toml.is_empty() {
            let start = *toml.get(index)?;
            let (nested, table) = (format!("[[{section}."), format!("[{section}."));
            let end = self.until(start, |l| {
                let l = l.trim_start();
                l.starts_with('[') && !l.starts_with(&nested) && !l.starts_with(&table)
            });
            return Some((start, end));
        }
        let list = self.lines.iter().position(|l| l.trim_end() == format!("{section}:"))?;
        self.yaml_items(list + 1, self.lines.len()).get(index).copied()
    }

    /// The `n`-th `[[section.field]]` block (TOML) or `field:` list item (YAML) within `start..end`.
    fn sub_item(&self, section: &str, field: &str, n: usize, start: usize, end: usize) -> Option<(usize, usize)> {
        let header = format!("[[{section}.{field}]]");
        let found: Vec<usize> = (start..end).filter(|&i| self.lines[i].trim() == header).collect();
        if let Some(&at) = found.get(n) {
            return Some((at, self.until(at, |l| l.trim_start().starts_with('[')).min(end)));
        }
        let list = (start..end).find(|&i| key_of(self.lines[i]) == Some(field))?;
        self.yaml_items(list + 1, end).get(n).copied()
    }

    /// The first line in `start..end` setting `name` (`name = `, `name:`, `"name" = ` or inside an inline
    /// table `{ name = ... }`).
    fn field(&self, name: &str, start: usize, end: usize) -> Option<usize> {
        let bare = name.trim_matches('"');
        (start..end).find(|&i| {
            let line = self.lines[i];
            key_of(line) == Some(bare)
                || [format!("{bare} ="), format!("\"{bare}\" ="), format!("{bare}:"), format!("\"{bare}\":")]
                    .iter()
                    .any(|needle| line.contains(needle.as_str()))
        })
    }

    /// YAML list items (`- ...`) at the first item's indentation, from `from` until a less indented line.
    fn yaml_items(&self, from: usize, end: usize) -> Vec<(usize, usize)> {
        let content = |i: &usize| !self.lines[*i].trim().is_empty() && !self.lines[*i].trim_start().starts_with('#');
        let Some(first) = (from..end).find(content) else { return Vec::new() };
        let indent = indentation(self.lines[first]);
        if !self.lines[first].trim_start().starts_with("- ") {
            return Vec::new();
        }
        let block_end = (first..end).find(|i| content(i) && indentation(self.lines[*i]) < indent).unwrap_or(end);
        let starts: Vec<usize> = (first..block_end)
            .filter(|&i| indentation(self.lines[i]) == indent && self.lines[i].trim_start().starts_with("- "))
            .collect();
        starts.iter().enumerate().map(|(k, &s)| (s, starts.get(k + 1).copied().unwrap_or(block_end))).collect()
    }

    fn positions(&self, pred: impl Fn(&str) -> bool) -> Vec<usize> {
        self.lines.iter().enumerate().filter(|(_, l)| pred(l)).map(|(i, _)| i).collect()
    }

    /// The first line after `start` for which `stop` holds, or the end of the file.
    fn until(&self, start: usize, stop: impl Fn(&str) -> bool) -> usize {
        (start + 1..self.lines.len()).find(|&i| stop(self.lines[i])).unwrap_or(self.lines.len())
    }
}

/// The key a YAML line sets (`  name: x` and `- name: x` both set `name`).
fn key_of(line: &str) -> Option<&str> {
    let line = line.trim_start().trim_start_matches("- ");
    let (key, _) = line.split_once(':')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains(' ') && !key.contains('=')).then_some(key)
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Splits `routes[2].allow[0].claims."a.b"` into items and fields (quoted names may hold dots).
fn steps(key: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        let end = match rest.strip_prefix('"') {
            Some(quoted) => quoted.find('"').map_or(rest.len(), |q| q + 2),
            None => rest.find('.').unwrap_or(rest.len()),
        };
        let (part, tail) = rest.split_at(end);
        out.push(match part.split_once('[') {
            Some((name, index)) => match index.trim_end_matches(']').parse() {
                Ok(n) => Step::Item(name, n),
                Err(_) => Step::Field(part),
            },
            None => Step::Field(part),
        });
        rest = tail.strip_prefix('.').unwrap_or(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"[server]
listen = "x"

[[issuers]]
name = "gitlab"
leeway = "10m"

[[issuers]]
name = "okta"
audiences = ["a"]
[issuers.headers]
"X-A" = "b"

[[routes]]
name = "one"
host = "a.example"
[[routes.allow]]
issuer = "gitlab"
[[routes.allow]]
issuer = "gitlab"
claims = { project_path = "x", "ref" = "main" }

[[routes]]
name = "two"
"#;

    #[test]
    fn toml_keys() {
        let l = Locator::new(TOML);
        assert_eq!(l.line("issuers[0].leeway"), 6);
        assert_eq!(l.line("issuers[1].audiences[0]"), 10);
        assert_eq!(l.line("routes[0]"), 14);
        assert_eq!(l.line("routes[0].host"), 16);
        assert_eq!(l.line("routes[0].allow[1]"), 19);
        assert_eq!(l.line("routes[0].allow[1].claims.\"ref\""), 21);
        assert_eq!(l.line("routes[1].mode"), 23, "a missing field: the block");
        assert_eq!(l.line("routes[7]"), 1, "unknown: line 1");
    }

    const YAML: &str = "server:\n  listen: x\nroutes:\n  - name: one\n    host: a\n  - name: two\n    mode: report\n    allow:\n      - issuer: gitlab\n        claims:\n          ref: main\n";

    #[test]
    fn yaml_keys() {
        let l = Locator::new(YAML);
        assert_eq!(l.line("routes[1]"), 6);
        assert_eq!(l.line("routes[1].mode"), 7);
        assert_eq!(l.line("routes[1].allow[0]"), 9);
        assert_eq!(l.line("routes[1].allow[0].claims.\"ref\""), 11);
    }

    #[test]
    fn key_steps() {
        assert_eq!(
            steps("routes[2].allow[0].claims.\"a.b\""),
            [Step::Item("routes", 2), Step::Item("allow", 0), Step::Field("claims"), Step::Field("\"a.b\"")]
        );
    }
}

//! The `toml::Table` walker: [`Section`] consumes one `[section]` key by key, typing each
//! value and collecting every problem in [`Problems`] under its full key, so that what is
//! left over is reported as unknown; plus the checks of referenced files.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::Problem;

/// The collected problems of one parse.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// One `[section]` being consumed: every key read is removed, so what is left at
/// [`Section::finish`] is unknown.
pub(super) struct Section {
    name: &'static str,
    table: Table,
    known: Vec<&'static str>,
    /// Keys asked for but absent (used by the test that keeps `config/pecd.toml` complete).
    pub(super) absent: Vec<String>,
}

impl Section {
    pub(super) fn take(root: &mut Table, name: &'static str, errs: &mut Problems) -> Section {
        let table = match root.remove(name) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                errs.push(
                    name,
                    format!("expected a table [{name}], found {}", type_name(&other)),
                );
                Table::new()
            }
        };
        Section {
            name,
            table,
            known: Vec::new(),
            absent: Vec::new(),
        }
    }

    pub(super) fn key(&self, k: &str) -> String {
        format!("{}.{}", self.name, k)
    }

    fn value(&mut self, k: &'static str) -> Option<Value> {
        self.known.push(k);
        let v = self.table.remove(k);
        if v.is_none() {
            self.absent.push(self.key(k));
        }
        v
    }

    pub(super) fn string(&mut self, k: &'static str, errs: &mut Problems) -> Option<String> {
        match self.value(k)? {
            Value::String(s) => Some(s),
            other => {
                errs.push(
                    self.key(k),
                    format!("expected a string, found {}", type_name(&other)),
                );
                None
            }
        }
    }

    pub(super) fn required_string(
        &mut self,
        k: &'static str,
        errs: &mut Problems,
    ) -> Option<String> {
        let v = self.string(k, errs);
        if v.is_none() && self.absent.last() == Some(&self.key(k)) {
            errs.push(self.key(k), "missing (required)");
        }
        v
    }

    pub(super) fn bool(&mut self, k: &'static str, default: bool, errs: &mut Problems) -> bool {
        match self.value(k) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("expected true or false, found {}", type_name(&other)),
                );
                default
            }
        }
    }

    /// An integer in `min..=max`; `why` explains a legal minimum. `None` after an error.
    pub(super) fn uint(
        &mut self,
        k: &'static str,
        default: u64,
        (min, max): (u64, u64),
        why: &str,
        errs: &mut Problems,
    ) -> Option<u64> {
        let v = match self.value(k) {
            None => return Some(default),
            Some(Value::Integer(i)) => i,
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("expected an integer, found {}", type_name(&other)),
                );
                return None;
            }
        };
        match u64::try_from(v) {
            Ok(v) if v < min && !why.is_empty() => {
                errs.push(self.key(k), format!("{v} is below {min}: {why}"));
                None
            }
            Ok(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                errs.push(
                    self.key(k),
                    format!("{v} is out of range (allowed {min}..={max})"),
                );
                None
            }
        }
    }

    /// A table (e.g. `{ "10.0.0.0/8" = 500 }`); empty when absent or of the wrong type
    /// (reported).
    pub(super) fn table(&mut self, k: &'static str, errs: &mut Problems) -> Table {
        match self.value(k) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("expected a table, found {}", type_name(&other)),
                );
                Table::new()
            }
        }
    }

    /// An array of strings, each with its indexed key (`trust.ca[2]`).
    pub(super) fn strings(
        &mut self,
        k: &'static str,
        errs: &mut Problems,
    ) -> Vec<(String, String)> {
        match self.value(k) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let key = format!("{}[{i}]", self.key(k));
                    match item {
                        Value::String(s) => out.push((key, s)),
                        other => errs.push(
                            key,
                            format!("expected a string, found {}", type_name(&other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                errs.push(
                    self.key(k),
                    format!("expected an array of strings, found {}", type_name(&other)),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn finish(self, errs: &mut Problems, absent: &mut Vec<String>) {
        for k in self.table.keys() {
            errs.push(
                self.key(k),
                format!(
                    "unknown key (known keys in [{}]: {})",
                    self.name,
                    self.known.join(", ")
                ),
            );
        }
        absent.extend(self.absent);
    }
}

/// Resolves `p` against the config directory; refuses the empty path.
pub(super) fn resolve(base: &Path, key: &str, p: &str, errs: &mut Problems) -> Option<PathBuf> {
    if p.trim().is_empty() {
        errs.push(key, "path must not be empty");
        return None;
    }
    Some(base.join(p))
}

/// Checks that a referenced file exists, is a file and can be opened for reading; false
/// (with the problem pushed) when not.
fn check_readable(key: &str, p: &Path, errs: &mut Problems) -> bool {
    match std::fs::metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errs.push(key, format!("file {} does not exist", p.display()))
        }
        Err(e) => errs.push(key, format!("cannot access {}: {e}", p.display())),
        Ok(m) if !m.is_file() => errs.push(key, format!("{} is not a regular file", p.display())),
        Ok(_) => match std::fs::File::open(p) {
            Ok(_) => return true,
            Err(e) => errs.push(key, format!("file {} cannot be read: {e}", p.display())),
        },
    }
    false
}

/// A required file path.
pub(super) fn file_key(
    sec: &mut Section,
    k: &'static str,
    base: &Path,
    errs: &mut Problems,
) -> Option<PathBuf> {
    let key = sec.key(k);
    let p = resolve(base, &key, &sec.required_string(k, errs)?, errs)?;
    check_readable(&key, &p, errs);
    Some(p)
}

/// An optional file path: `None` when absent or when the file is not readable (the
/// problem is pushed).
pub(super) fn optional_file_key(
    sec: &mut Section,
    k: &'static str,
    base: &Path,
    errs: &mut Problems,
) -> Option<PathBuf> {
    let key = sec.key(k);
    let p = resolve(base, &key, &sec.string(k, errs)?, errs)?;
    check_readable(&key, &p, errs).then_some(p)
}

/// A list of file paths, each checked.
pub(super) fn file_list(
    sec: &mut Section,
    k: &'static str,
    base: &Path,
    errs: &mut Problems,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (key, s) in sec.strings(k, errs) {
        if let Some(p) = resolve(base, &key, &s, errs) {
            check_readable(&key, &p, errs);
            out.push(p);
        }
    }
    out
}

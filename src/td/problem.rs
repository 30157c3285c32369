//! The one kind of complaint about a thing file, Thing Model or TD: [`Problem`] names the file,
//! the JSON pointer and the broken rule, and says what is wrong. Both `definition` (reading
//! thing files) and `model` (instantiating Thing Models) report with it; it depends on neither.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::core::SchemaViolation;

/// A precise complaint about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file at fault.
    pub file: PathBuf,
    /// Where in it, as a JSON pointer (empty: the whole document).
    pub pointer: String,
    /// The rule broken: a JSON Schema keyword, a TD or TM assertion, or one of the runtime's
    /// (`runtime`, `runtime-owned`, `json`, `file-name`, ...).
    pub rule: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{}: at {at}: [{}] {}",
            self.file.display(),
            self.rule,
            self.message
        )
    }
}

impl Problem {
    /// A problem of `file` at `pointer`.
    pub fn new(file: &Path, pointer: impl Into<String>, rule: &str, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_owned(),
            pointer: pointer.into(),
            rule: rule.into(),
            message: message.into(),
        }
    }
    /// A schema violation of `file`'s document.
    pub fn from_violation(file: &Path, v: SchemaViolation) -> Self {
        Problem {
            file: file.to_owned(),
            pointer: v.pointer,
            rule: v.rule,
            message: v.message,
        }
    }
}

//! What is wrong with a config: each [`Problem`] located by its key path, and the
//! [`ConfigError`] of a file that did not load.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config file, located by key path (and line/column for syntax errors).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded: the file, and every problem found in it.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Each problem as one line, prefixed with the file name.
    pub fn lines(&self) -> Vec<String> {
        let file = self.file.display();
        self.problems
            .iter()
            .map(|p| format!("{file}: {p}"))
            .collect()
    }
}

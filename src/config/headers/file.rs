//! The serde form of an `add_response_headers` entry (a value, or `{ value, always }`), as written
//! in the file; [`super::check`] turns the header tables into [`super::HeaderRule`]s and
//! [`super::ResponseHeaders`].

use serde::Deserialize;

/// An `add_response_headers` entry: its value, or `{ value = "...", always = true }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum AddHeaderFile {
    Value(String),
    Table(AddHeaderTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHeaderTable {
    pub value: String,
    pub always: Option<bool>,
}

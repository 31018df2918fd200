//! Safe, parallel zip extraction (TEMPORARY STUB, replaced by the extract branch at merge).
#![allow(missing_docs)]
use std::path::Path;
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub max_entries: u64,
    pub max_unpacked_bytes: u64,
    pub threads: usize,
    pub sync: bool,
}
#[derive(Debug, Clone)]
pub struct ExtractedFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}
#[derive(Debug, Clone)]
pub struct ExtractReport {
    pub files: Vec<ExtractedFile>,
    pub dirs: Vec<String>,
    pub entries: u64,
    pub unpacked_bytes: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct ExtractError;
impl ExtractError {
    pub fn is_corrupt_download(&self) -> bool {
        false
    }
}
pub fn extract_zip(
    _zip: &Path,
    _dest: &Path,
    _o: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    Err(ExtractError)
}

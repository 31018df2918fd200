//! Work done for one archived ticket after download (placeholder; the lead merges the real tree).

pub mod upload;

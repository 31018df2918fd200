//! OSS presigned-URL simulator (being written).

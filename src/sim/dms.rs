//! DMS Enterprise API simulator (being written).

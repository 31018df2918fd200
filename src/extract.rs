//! Safe, parallel zip extraction (being written).

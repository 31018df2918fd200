//! Sample export zips (being written).

//! The flat XML reader (being written).

//! Feature plugins (rowwise): being written.

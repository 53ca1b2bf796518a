//! Feature plugins (categorical): being written.

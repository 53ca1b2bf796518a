//! Feature plugins (numeric): being written.

//! Bounded property tests (the in-suite versions of the fuzz targets): being written.

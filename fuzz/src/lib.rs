//! Shared input builders for the fuzz targets in `fuzz/fuzz_targets/`.

//! zoa's fuzz targets as a library: see `targets`.
pub mod targets;

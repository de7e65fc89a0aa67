//! Experiments: typed YAML `spec` → `plan` (sweep expansion, validation, cell ids) → `runner` (loop, ledger,
//! progress, metrics) → `store` (atomic cell files, resume, tidy rows).

pub mod cost;
pub mod keys;
pub mod plan;
pub mod run;
pub mod runner;
pub mod spec;
pub mod store;

//! Experiments: typed YAML `spec` → `plan` (sweep expansion, validation, cell ids) → `runner` (loop, ledger,
//! progress, metrics) → `store` (atomic cell files, resume, tidy rows); on clusters `shard` (which cells a
//! worker runs), `merge` (tables from the cell files of many shards) and `slurm` (job array + merge job).

pub mod cost;
pub mod costing;
pub mod keys;
pub mod merge;
pub mod plan;
pub mod run;
pub mod runner;
pub mod shard;
pub mod slurm;
pub mod spec;
pub mod store;

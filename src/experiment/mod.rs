//! Experiments: typed YAML `spec` → `plan` (sweep expansion, validation, cell ids) → `runner` (loop, ledger,
//! progress, metrics) → `store` (atomic cell files, resume, tidy rows).

pub mod cost;
pub mod cross_reward;
pub mod keys;
pub mod mini_cell;
pub mod mini_check;
pub mod mini_sir;
pub mod plan;
pub mod problem;
pub mod run;
pub mod runner;
pub mod sd_cell;
pub mod spec;
pub mod store;

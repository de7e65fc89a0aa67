//! The sampling loop (argmin's executor): a cell's groups are split into chunks of about 2048 rows, each chunk's
//! sampler is driven one step at a time, chunks run in parallel (rayon), and `tick` reports progress. Chunking
//! changes memory and speed, never results: every random number comes from the (group, step)-indexed streams, and
//! the partition into chunks does not depend on the number of threads, so neither do the summed diagnostics.

use rayon::prelude::*;

use super::method::Method;
use super::{Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::Cond;
use crate::Result;

/// Chunks a cell's groups are split into at the least (when it has that many groups): enough to keep a few
/// threads busy on small cells; large cells split further by the 2048-row limit.
pub const MIN_CHUNKS: usize = 4;

/// Estimated peak bytes of sampling a cell of `groups` groups of `k` particles with `dim` numbers each: every
/// group's outputs are kept until evaluation (samples, weights and rewards of up to `k` outputs, plus the group's
/// bookkeeping), and a chunk's sampler holds a few copies of its particles (at least one group's `k`). An f64 so
/// absurd sizes neither overflow nor wrap; the plan refuses cells whose estimate exceeds the machine's memory.
pub fn memory_bytes(k: usize, groups: usize, dim: usize) -> f64 {
    let (k, groups, dim) = (k.max(1) as f64, groups as f64, dim.max(1) as f64);
    let outputs = groups * (k * (4.0 * dim + 16.0) + 96.0);
    let chunk_rows = (2048.0f64).max(k);
    let working = 8.0 * chunk_rows * (4.0 * dim + 16.0);
    outputs + working
}

/// Output of sampling a whole cell.
pub struct Sampled {
    /// Per group, in group order.
    pub outputs: Vec<GroupOutput>,
    /// Per step, summed over groups.
    pub traces: Vec<StepTrace>,
}

/// Run the sampler of `method` over `groups` groups, in chunks of about `rows` rows, in parallel.
/// `tick(n)` is called after each chunk-step with the number of groups advanced.
pub fn sample_groups(
    model: &Model,
    method: &dyn Method,
    alpha: f64,
    groups: usize,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    sample_groups_with(model, method.particles(), groups, &|| method.sampler(alpha), tick)
}

/// Run samplers made by `make` (`k` particles per group) over `groups` unconditional groups, in chunks of about 2048
/// rows, in parallel. Chunking changes memory and speed, never results.
pub fn sample_groups_with(
    model: &Model,
    k: usize,
    groups: usize,
    make: &(dyn Fn() -> Result<Box<dyn Sampler>> + Sync),
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    sample_groups_cond(model, k, groups, &[], make, tick)
}

/// [`sample_groups_with`] with prompt labels: group g is conditioned on `labels[g % labels.len()]` (empty = ∅).
pub fn sample_groups_cond(
    model: &Model,
    k: usize,
    groups: usize,
    labels: &[usize],
    make: &(dyn Fn() -> Result<Box<dyn Sampler>> + Sync),
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    let k = k.max(1);
    // At most ~2048 rows per chunk and at least MIN_CHUNKS chunks when there are enough groups. The partition
    // depends on the cell only, never on the thread count: the per-step diagnostics are summed chunk by chunk, so
    // a partition that followed `--threads` would change their last digits.
    let per_chunk = groups.div_ceil(MIN_CHUNKS).max(1);
    let chunk = (2048 / k).min(per_chunk).clamp(1, groups.max(1));
    let chunks: Vec<Vec<u64>> = (0..groups as u64).collect::<Vec<_>>().chunks(chunk).map(|c| c.to_vec()).collect();
    let n = model.grid.len();
    let parts: Vec<Result<(Vec<GroupOutput>, Vec<StepTrace>)>> = chunks
        .into_par_iter()
        .map(|gs| {
            let mut s = make()?;
            let cond = if labels.is_empty() {
                Cond::None
            } else {
                Cond::Labels(gs.iter().map(|&g| labels[g as usize % labels.len()]).collect())
            };
            let b = Batch { groups: gs, cond };
            s.init(model, &b)?;
            let mut tr = Vec::with_capacity(n);
            for i in 0..n {
                tr.push(s.step(model, &b, i)?);
                tick(b.groups.len() as u64);
            }
            Ok((s.finish(model, &b)?, tr))
        })
        .collect();
    let mut outputs = Vec::with_capacity(groups);
    let mut traces = vec![StepTrace::default(); n];
    for p in parts {
        let (o, t) = p?;
        outputs.extend(o);
        for (a, b) in traces.iter_mut().zip(&t) {
            a.add(b);
        }
    }
    Ok(Sampled { outputs, traces })
}

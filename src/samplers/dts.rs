//! DTS / DTS★ — Diffusion Tree Sampling (Jain, Rainone, Sabour, … 2025, "Diffusion Tree Sampling: scalable
//! inference-time alignment of diffusion models", arXiv 2506.20701), written from the paper's equations.
//!
//! A tree over the denoising levels of the sampling grid (`tree.rs`): the root sits above x_T, a node at level L
//! holds a state at loop index L, terminal nodes hold outputs x_0. One iteration:
//! 1. **selection** from the root: at a node with fewer children than the widening rule allows
//!    (⌈c·visits^κ⌉, at least 1 — progressive widening [design]; a level-(N−1) node has exactly one child, its
//!    output), stop and expand; otherwise move to a child — DTS draws it ∝ exp(v̂(child)/α) (the soft-optimal
//!    kernel of methods.md §1 restricted to the children, which were drawn from p_θ), DTS★ takes the argmax;
//! 2. **expansion** by the pretrained transition, x' = μ + σ·z (the root's children are x_T ~ N(0, I));
//! 3. **rollout** to x_0 with the pretrained sampler; every state on the way joins the tree (each costs one
//!    denoiser row, and a node's step mean μ is kept so later expansions cost nothing);
//! 4. **backup**: a terminal's value is r(D(x_0)); every node on the path takes the soft value
//!    v̂(s) = α·log mean_{c ∈ children(s)} exp(v̂(c)/α) (eq. 5 of the paper).
//!
//! Anytime: iterations run until the group has spent `rows` denoiser rows; the rollout that would overrun the budget
//! is cut at the budget and dropped, so the ledger counts exactly `rows` per group. Outputs: DTS descends the final
//! tree `particles` times, drawing children ∝ exp(v̂/α) (a sample of the tilted target as the tree grows);
//! DTS★ (`mode: search`) returns the `particles` best outputs found (the mode search). log Ẑ = v̂(root)/α.
//! Groups are grown [`BLOCK`] at a time (rollouts batched across them); the trees of a block are dropped once
//! their outputs are drawn, so memory is bounded by BLOCK trees per worker thread (checked at plan time, the mean
//! tree size reported as `tree_nodes` and `tree_mb`).

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::tree::{Tree, NODE_OVERHEAD, ROOT_LEVEL};
use super::{reward_rows, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::diffusion::Cond;
use crate::ledger::Cost;
use crate::rng::{fill_normal, uniform, Purpose};
use crate::{Error, Result};

/// Groups grown together (their rollouts share denoiser calls).
pub const BLOCK: usize = 16;

/// What the tree is used for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeMode {
    /// DTS: select children ∝ exp(v̂/α), output descents of the final tree (samples of the tilted target).
    #[default]
    Sample,
    /// DTS★: select the child of largest v̂, output the best outputs found (mode search).
    Search,
}

/// Settings of DTS / DTS★.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DtsConfig {
    /// Outputs per group.
    #[serde(default = "one")]
    pub particles: usize,
    /// Denoiser rows per group (the anytime budget; what a `budget:` sizes).
    #[serde(default = "thousand")]
    pub rows: usize,
    /// `sample` (DTS) or `search` (DTS★).
    #[serde(default)]
    pub mode: TreeMode,
    /// Widening constant c: a node with v visits may have ⌈c·v^κ⌉ children (default 2, Jain et al. 2025, App. F.1).
    #[serde(default = "two")]
    pub branch_c: f64,
    /// Widening exponent κ ∈ (0, 1] (default 0.8, Jain et al. 2025, App. F.1).
    #[serde(default = "four_fifths")]
    pub branch_exp: f64,
    /// Branch every M steps: below the root (the draws of x_T) a node may take more than one child only at loop
    /// indices that are multiples of M; in between, the tree is a chain of single pretrained steps. 1 (default):
    /// every level branches. Jain et al. 2025 (App. F, Table 2) branch at the root and every 10 of 50 steps (M = 10).
    #[serde(default = "one")]
    pub branch_every: usize,
}

fn one() -> usize {
    1
}
fn thousand() -> usize {
    1000
}
fn two() -> f64 {
    2.0
}
fn four_fifths() -> f64 {
    0.8
}

impl DtsConfig {
    /// Upper bound on a tree's bytes: every kept non-terminal node cost one row, every terminal hangs under its
    /// own level-(N−1) node, so a tree has at most 2·rows + 1 nodes.
    pub fn tree_bytes(&self, dim: usize) -> f64 {
        (2 * self.rows + 1) as f64 * (4 * dim + NODE_OVERHEAD) as f64
    }
}

/// `dts` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "dts",
    about: "DTS / DTS★ (mode: search): tree over denoising steps, soft-value backup, anytime in denoiser rows",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for DtsConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    /// A compute budget sizes the rows per group.
    fn size_key(&self) -> Option<&'static str> {
        Some("rows")
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        super::method::check_particles(self.particles)?;
        if self.rows < chain.steps {
            return Err(Error::config(format!(
                "rows: DTS needs at least one full rollout per group ({} rows at steps: {}), got {}",
                chain.steps, chain.steps, self.rows
            )));
        }
        if !(self.branch_c > 0.0 && self.branch_c.is_finite()) {
            return Err(Error::config("branch_c: must be a positive number (default 2.0)"));
        }
        if !(self.branch_exp > 0.0 && self.branch_exp <= 1.0) {
            return Err(Error::config("branch_exp: must be in (0, 1] (default 0.8)"));
        }
        if self.branch_every == 0 || self.branch_every >= chain.steps {
            return Err(Error::config(format!(
                "branch_every: must be in 1..{} (steps between branching levels; default 1, the paper's 10 of 50)",
                chain.steps
            )));
        }
        chain.needs_noise(INFO.name)?;
        let alive = (BLOCK * rayon::current_num_threads()) as f64 * self.tree_bytes(chain.dim);
        let limit = crate::numerics::total_memory_bytes().unwrap_or(f64::INFINITY) / 2.0;
        if alive > limit {
            return Err(Error::config(format!(
                "rows: DTS trees of {} rows × {} numbers per state need up to {} each, {} alive at once ({BLOCK} per \
                 worker thread) — more than half this machine's memory ({}); lower `rows` or `--threads`",
                self.rows,
                chain.dim,
                crate::numerics::human_bytes(self.tree_bytes(chain.dim)),
                crate::numerics::human_bytes(alive),
                crate::numerics::human_bytes(2.0 * limit)
            )));
        }
        Ok(())
    }
    /// Exactly `rows` denoiser rows per group (a rollout cut by the budget is counted and dropped). One reward per
    /// completed rollout, each of which costs at least one row: `reward_calls` is an upper bound, not a count.
    fn cost(&self, _steps: usize) -> Cost {
        let r = self.rows as f64;
        Cost { nfe: r, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: r }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DtsSampler { cfg: self.clone(), alpha, outputs: vec![] }))
    }
}

/// DTS state for a batch: the outputs of the groups grown so far.
pub struct DtsSampler {
    cfg: DtsConfig,
    alpha: f64,
    outputs: Vec<Option<GroupOutput>>,
}

/// One group's tree while it grows.
struct Growing {
    gi: usize,
    group: u64,
    tree: Tree,
    used: usize,
    done: bool,
    completed: usize,
    expand: ChaCha8Rng,
    select: ChaCha8Rng,
    /// The iteration in flight: path from the root to the expanded node, tree length before it, the current
    /// rollout node and its level, the level the rollout stops at (N, or earlier when cut by the budget).
    path: Vec<u32>,
    saved: usize,
    cur: u32,
    level: usize,
    stop: usize,
}

fn cond_rows(b: &Batch, gis: &[usize]) -> Cond {
    match &b.cond {
        Cond::None => Cond::None,
        Cond::Labels(l) => Cond::Labels(gis.iter().map(|&g| l[g]).collect()),
    }
}

impl DtsSampler {
    /// ⌈c·v^κ⌉ children allowed at a node with v visits (at least 1).
    fn allowed(&self, visits: u32) -> usize {
        ((self.cfg.branch_c * (visits as f64).powf(self.cfg.branch_exp)).ceil() as usize).max(1)
    }

    /// The child of `node` to descend to: ∝ exp(v̂/α) (DTS; children visited newest first) or the argmax (DTS★,
    /// ties → oldest).
    fn pick(&self, t: &Tree, node: u32, rng: &mut ChaCha8Rng) -> u32 {
        let best = t.best_child(node).expect("a node with children");
        if self.cfg.mode == TreeMode::Search {
            return best;
        }
        let top = t.value(best);
        let w = |c: u32| ((t.value(c) - top) / self.alpha).exp();
        let mut u = uniform(rng) * t.child_iter(node).map(w).sum::<f64>();
        for c in t.child_iter(node) {
            let wc = w(c);
            if u < wc {
                return c;
            }
            u -= wc;
        }
        best
    }

    /// Selection and expansion for one group: descend until a node may take another child, add that child
    /// (x' = μ + σz, or z at the root) and set up its rollout. Descents that end at an output only count visits.
    fn select_and_expand(&self, m: &Model, g: &mut Growing) -> Result<()> {
        let n = m.grid.len();
        let d = m.dim();
        let mut revisits = 0usize;
        loop {
            let mut node = 0u32;
            let mut path = vec![0u32];
            let expanded = loop {
                let lvl = g.tree.level(node);
                if lvl as usize == n {
                    break None;
                }
                let every = self.cfg.branch_every;
                let branches = every == 1 || lvl == ROOT_LEVEL || (lvl != 0 && lvl as usize % every == 0);
                let cap = if lvl as usize == n - 1 || !branches { 1 } else { self.allowed(g.tree.visits(node)) };
                if g.tree.n_children(node) < cap {
                    break Some(node);
                }
                node = self.pick(&g.tree, node, &mut g.select);
                path.push(node);
            };
            let Some(parent) = expanded else {
                // Nothing below changed: only the visit counts move (the soft values are unchanged).
                for &p in &path {
                    g.tree.revisit(p);
                }
                revisits += 1;
                if revisits > 1_000_000 {
                    return Err(Error::numeric("dts", format!("group {}: no node left to expand", g.group)));
                }
                continue;
            };
            let mut z = vec![0f32; d];
            fill_normal(&mut g.expand, &mut z);
            let plvl = g.tree.level(parent);
            let x: Vec<f32> = if plvl == ROOT_LEVEL {
                z
            } else {
                let s = m.grid.sigma(plvl as usize, m.eta) as f32;
                g.tree.state(parent).iter().zip(&z).map(|(mu, zi)| mu + s * zi).collect()
            };
            g.saved = g.tree.len();
            g.cur = g.tree.add_child(parent, &x);
            g.level = g.tree.level(g.cur) as usize;
            g.stop = (g.level + (self.cfg.rows - g.used)).min(n);
            g.path = path;
            return Ok(());
        }
    }

    /// Grow the trees of a block of groups to their budgets, then draw their outputs.
    fn grow(&mut self, m: &Model, b: &Batch, gis: &[usize]) -> Result<()> {
        let (n, d) = (m.grid.len(), m.dim());
        let mut gs: Vec<Growing> = gis
            .iter()
            .map(|&gi| {
                let group = b.groups[gi];
                Growing {
                    gi,
                    group,
                    tree: Tree::new(d),
                    used: 0,
                    done: false,
                    completed: 0,
                    expand: m.streams.rng(Purpose::Tree, group, 0),
                    select: m.streams.rng(Purpose::Tree, group, 1),
                    path: vec![],
                    saved: 0,
                    cur: 0,
                    level: 0,
                    stop: 0,
                }
            })
            .collect();
        while gs.iter().any(|g| !g.done) {
            for g in gs.iter_mut().filter(|g| !g.done) {
                self.select_and_expand(m, g)?;
            }
            let live: Vec<usize> = (0..gs.len()).filter(|&j| !gs[j].done).collect();
            let start = live.iter().map(|&j| gs[j].level).min().unwrap_or(n);
            let mut finals: Vec<usize> = vec![];
            for lvl in start..n {
                let rows: Vec<usize> =
                    live.iter().copied().filter(|&j| gs[j].level == lvl && lvl < gs[j].stop).collect();
                if rows.is_empty() {
                    continue;
                }
                let mut x: Vec<f32> = Vec::with_capacity(rows.len() * d);
                for &j in &rows {
                    x.extend_from_slice(gs[j].tree.state(gs[j].cur));
                }
                let (mut eps, mut x0, mut mu) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0f32; x.len()]);
                let cond = cond_rows(b, &rows.iter().map(|&j| gs[j].gi).collect::<Vec<_>>());
                lookahead(
                    m,
                    &x,
                    &cond,
                    lvl,
                    Grad::None,
                    false,
                    Look { eps: &mut eps, x0: &mut x0, r: &mut [], g: &mut [] },
                )?;
                let c = StepCoef::new(m.grid.a[lvl], m.grid.a_prev[lvl], m.eta);
                mean(&c, &x0, &eps, &mut mu);
                let s = c.sigma as f32;
                let (mut z, mut xn) = (vec![0f32; d], vec![0f32; d]);
                for (r, &j) in rows.iter().enumerate() {
                    let g = &mut gs[j];
                    let mu_r = &mu[r * d..(r + 1) * d];
                    g.tree.state_mut(g.cur).copy_from_slice(mu_r);
                    g.used += 1;
                    fill_normal(&mut g.expand, &mut z);
                    for ((o, a), zi) in xn.iter_mut().zip(mu_r).zip(&z) {
                        *o = a + s * zi;
                    }
                    g.cur = g.tree.add_child(g.cur, &xn);
                    g.level = lvl + 1;
                    if g.level == n {
                        finals.push(j);
                    }
                }
            }
            let x: Vec<f32> = finals.iter().flat_map(|&j| gs[j].tree.state(gs[j].cur).to_vec()).collect();
            let cond = cond_rows(b, &finals.iter().map(|&j| gs[j].gi).collect::<Vec<_>>());
            let r = if finals.is_empty() { vec![] } else { reward_rows(m, &x, &cond)? };
            for (&j, rv) in finals.iter().zip(&r) {
                if !rv.is_finite() {
                    return Err(Error::numeric("dts", format!("non-finite reward {rv} in group {}", gs[j].group)));
                }
                let cur = gs[j].cur;
                gs[j].tree.set_value(cur, *rv);
            }
            for &j in &live {
                let g = &mut gs[j];
                if g.level < n {
                    // Cut by the budget: the rows were spent, the partial rollout is dropped.
                    g.tree.truncate(g.saved);
                    g.done = true;
                    continue;
                }
                // Back up from the output's parent to the expanded node, then along the selection path.
                let mut node = g.tree.parent(g.cur);
                while node as usize >= g.saved {
                    g.tree.backup(node, self.alpha);
                    node = g.tree.parent(node);
                }
                for &p in g.path.iter().rev() {
                    g.tree.backup(p, self.alpha);
                }
                g.completed += 1;
                g.done = g.used >= self.cfg.rows;
            }
        }
        for g in gs {
            let out = self.outputs_of(m, g)?;
            self.outputs[out.0] = Some(out.1);
        }
        Ok(())
    }

    /// A grown tree's outputs: descents ∝ exp(v̂/α) (DTS) or the best outputs found (DTS★).
    fn outputs_of(&self, m: &Model, g: Growing) -> Result<(usize, GroupOutput)> {
        let (n, k) = (m.grid.len(), self.cfg.particles);
        let picks: Vec<u32> = match self.cfg.mode {
            TreeMode::Sample => {
                let mut rng = m.streams.rng(Purpose::Select, g.group, 0);
                (0..k)
                    .map(|_| {
                        let mut node = 0u32;
                        while g.tree.level(node) as usize != n {
                            node = self.pick(&g.tree, node, &mut rng);
                        }
                        node
                    })
                    .collect()
            }
            TreeMode::Search => {
                let mut t = g.tree.terminals(n);
                t.sort_by(|a, b| g.tree.value(*b).total_cmp(&g.tree.value(*a)).then(a.cmp(b)));
                (0..k).map(|j| t[j % t.len()]).collect()
            }
        };
        let out = GroupOutput {
            samples: picks.iter().flat_map(|&p| g.tree.state(p).to_vec()).collect(),
            weights: vec![1.0 / k as f64; k],
            rewards: picks.iter().map(|&p| g.tree.value(p)).collect(),
            log_z_hat: Some(g.tree.value(0) / self.alpha),
            stats: vec![
                ("tree_nodes", g.tree.len() as f64),
                ("tree_mb", g.tree.bytes() as f64 / 1e6),
                ("tree_rollouts", g.completed as f64),
            ],
        };
        Ok((g.gi, out))
    }
}

impl Sampler for DtsSampler {
    fn init(&mut self, _m: &Model, b: &Batch) -> Result<()> {
        self.outputs = vec![None; b.groups.len()];
        Ok(())
    }

    /// Step i grows the trees of the batch's i-th share of groups (so progress follows the work), BLOCK at a time.
    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (g, n) = (b.groups.len(), m.grid.len());
        let mine: Vec<usize> = (i * g / n..(i + 1) * g / n).collect();
        for block in mine.chunks(BLOCK) {
            self.grow(m, b, block)?;
        }
        Ok(StepTrace { groups: g as u64, ..Default::default() })
    }

    fn finish(&mut self, _m: &Model, _b: &Batch) -> Result<Vec<GroupOutput>> {
        self.outputs
            .iter_mut()
            .map(|o| o.take().ok_or_else(|| Error::numeric("dts", "a group was never grown".to_string())))
            .collect()
    }
}

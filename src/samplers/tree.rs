//! The search tree of Diffusion Tree Sampling (`dts.rs`): one node per partially denoised state, the root a virtual
//! node above x_T. Nodes live in flat arrays (struct of arrays, children as sibling lists) so a tree of n nodes of
//! dimension d takes n·(4d + [`NODE_OVERHEAD`]) bytes and no allocation per node; the soft-value backup
//! v(s) = α·log((1/|C|)·Σ_{c∈C} exp(v(c)/α)) (Jain et al. 2025, eq. 5 — the soft Bellman equation of methods.md §1
//! with the expectation over p_θ(·|s) replaced by the children drawn from it) lives here too.

/// "No node" in the link arrays.
pub const NONE: u32 = u32::MAX;

/// Level of the root (the virtual node whose children are initial noises x_T).
pub const ROOT_LEVEL: u16 = u16::MAX;

/// Bytes per node besides its state: level (2), parent, first child, next sibling, child count, visits (4 each),
/// soft value (8).
pub const NODE_OVERHEAD: usize = 30;

/// A tree over denoising levels: level L ∈ 0..N holds a state x at loop index L (x_T at L = 0); level N holds the
/// outputs x_0 (terminal nodes).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Numbers per state.
    pub d: usize,
    level: Vec<u16>,
    parent: Vec<u32>,
    first_child: Vec<u32>,
    next_sibling: Vec<u32>,
    n_children: Vec<u32>,
    visits: Vec<u32>,
    value: Vec<f64>,
    /// Per node `d` numbers: the state x until the node is expanded, then the mean μ of its step (a child is
    /// μ + σ·z); for a terminal node its output x_0.
    state: Vec<f32>,
}

impl Tree {
    /// A tree holding only its root.
    pub fn new(d: usize) -> Self {
        let mut t = Tree { d, ..Default::default() };
        t.push(ROOT_LEVEL, NONE, &vec![0.0; d]);
        t
    }

    fn push(&mut self, level: u16, parent: u32, x: &[f32]) -> u32 {
        let id = self.level.len() as u32;
        self.level.push(level);
        self.parent.push(parent);
        self.first_child.push(NONE);
        self.next_sibling.push(NONE);
        self.n_children.push(0);
        self.visits.push(0);
        self.value.push(0.0);
        self.state.extend_from_slice(x);
        id
    }

    /// Append a child of `parent` with state `x`; returns its id (ids grow in creation order).
    pub fn add_child(&mut self, parent: u32, x: &[f32]) -> u32 {
        let p = parent as usize;
        let level = if self.level[p] == ROOT_LEVEL { 0 } else { self.level[p] + 1 };
        let id = self.push(level, parent, x);
        self.next_sibling[id as usize] = self.first_child[p];
        self.first_child[p] = id;
        self.n_children[p] += 1;
        id
    }

    /// Drop every node created after the tree had `len` nodes (a rollout cut by the budget). Only the newest
    /// subtree may be dropped: its root must be the first child of its parent.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len() {
            return;
        }
        let top = len as u32;
        let p = self.parent[len] as usize;
        debug_assert_eq!(self.first_child[p], top);
        self.first_child[p] = self.next_sibling[len];
        self.n_children[p] -= 1;
        for v in
            [&mut self.parent, &mut self.first_child, &mut self.next_sibling, &mut self.n_children, &mut self.visits]
        {
            v.truncate(len);
        }
        self.level.truncate(len);
        self.value.truncate(len);
        self.state.truncate(len * self.d);
    }

    /// Number of nodes (root included).
    pub fn len(&self) -> usize {
        self.level.len()
    }

    /// Whether the tree holds only its root.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Bytes the tree's arrays hold.
    pub fn bytes(&self) -> usize {
        self.len() * (4 * self.d + NODE_OVERHEAD)
    }

    /// Level of a node ([`ROOT_LEVEL`] for the root).
    pub fn level(&self, n: u32) -> u16 {
        self.level[n as usize]
    }

    /// Parent of a node ([`NONE`] for the root).
    pub fn parent(&self, n: u32) -> u32 {
        self.parent[n as usize]
    }

    /// Children of a node, oldest first.
    pub fn children(&self, n: u32) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.n_children[n as usize] as usize);
        let mut c = self.first_child[n as usize];
        while c != NONE {
            out.push(c);
            c = self.next_sibling[c as usize];
        }
        out.reverse();
        out
    }

    /// Children of a node, newest first, without allocating.
    pub fn child_iter(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        let mut c = self.first_child[n as usize];
        std::iter::from_fn(move || {
            if c == NONE {
                return None;
            }
            let r = c;
            c = self.next_sibling[c as usize];
            Some(r)
        })
    }

    /// The child of largest soft value (ties → the oldest, i.e. the lowest id); `None` without children.
    pub fn best_child(&self, n: u32) -> Option<u32> {
        self.child_iter(n).fold(None, |b: Option<u32>, c| match b {
            Some(b) if self.value[b as usize] > self.value[c as usize] => Some(b),
            Some(b) if self.value[b as usize] == self.value[c as usize] && b < c => Some(b),
            _ => Some(c),
        })
    }

    /// Count a visit that changed nothing below the node (a descent that ended at an existing output).
    pub fn revisit(&mut self, n: u32) {
        self.visits[n as usize] += 1;
    }

    /// Number of children.
    pub fn n_children(&self, n: u32) -> usize {
        self.n_children[n as usize] as usize
    }

    /// Visits (iterations whose path went through the node).
    pub fn visits(&self, n: u32) -> u32 {
        self.visits[n as usize]
    }

    /// Soft value v̂ (reward units).
    pub fn value(&self, n: u32) -> f64 {
        self.value[n as usize]
    }

    /// Set a terminal node's value (its reward).
    pub fn set_value(&mut self, n: u32, v: f64) {
        self.value[n as usize] = v;
    }

    /// The node's state (see [`Tree`]).
    pub fn state(&self, n: u32) -> &[f32] {
        &self.state[n as usize * self.d..(n as usize + 1) * self.d]
    }

    /// Mutable state (the expansion overwrites x by the step mean μ).
    pub fn state_mut(&mut self, n: u32) -> &mut [f32] {
        &mut self.state[n as usize * self.d..(n as usize + 1) * self.d]
    }

    /// Every terminal node (level `n_levels`), in creation order.
    pub fn terminals(&self, n_levels: usize) -> Vec<u32> {
        (0..self.len() as u32).filter(|&i| self.level[i as usize] as usize == n_levels).collect()
    }

    /// Count one more visit of `n` and recompute its soft value from its children at temperature α:
    /// v = α·(LSE_c(v_c/α) − log |C|) (Jain et al. 2025, eq. 5). A node without children keeps its value.
    pub fn backup(&mut self, n: u32, alpha: f64) {
        self.visits[n as usize] += 1;
        let k = self.n_children(n);
        if k == 0 {
            return;
        }
        let m = self.child_iter(n).map(|c| self.value[c as usize] / alpha).fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = self.child_iter(n).map(|c| (self.value[c as usize] / alpha - m).exp()).sum();
        self.value[n as usize] = alpha * (m + s.ln() - (k as f64).ln());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_backup_and_truncation() {
        let mut t = Tree::new(2);
        let a = t.add_child(0, &[1.0, 2.0]);
        let b = t.add_child(0, &[3.0, 4.0]);
        assert_eq!(t.children(0), vec![a, b]);
        assert_eq!((t.level(a), t.level(b)), (0, 0));
        let c = t.add_child(a, &[5.0, 6.0]);
        assert_eq!(t.level(c), 1);
        t.set_value(a, 1.0);
        t.set_value(b, 3.0);
        t.backup(0, 2.0);
        // α·log((e^{1/2} + e^{3/2})/2)
        let want = 2.0 * (((0.5f64).exp() + (1.5f64).exp()) / 2.0).ln();
        assert!((t.value(0) - want).abs() < 1e-12);
        assert_eq!(t.best_child(0), Some(b));
        assert_eq!(t.child_iter(0).collect::<Vec<_>>(), vec![b, a]);
        assert_eq!(t.visits(0), 1);
        // Dropping the newest subtree (b's new child and below) restores the tree.
        let len = t.len();
        let d1 = t.add_child(b, &[0.0, 0.0]);
        t.add_child(d1, &[0.0, 0.0]);
        t.truncate(len);
        assert_eq!(t.len(), len);
        assert_eq!(t.n_children(b), 0);
        assert_eq!(t.children(0), vec![a, b]);
        assert_eq!(t.state(c), &[5.0, 6.0]);
        assert_eq!(t.bytes(), 4 * (8 + NODE_OVERHEAD));
    }
}

//! A weighted sum of rewards, r(y | c) = Σ_k w_k·r_k(y | c): the multi-objective target of the paper
//! (w·aesthetic + (1 − w)·20·CLIPScore, rewards.md §6) and of the Fashion-MNIST T3 task. Differentiable iff every
//! term is; the gradient is Σ_k w_k ∇r_k.

use super::Reward;
use crate::diffusion::Cond;
use crate::{Error, Result};

/// Σ_k w_k r_k.
pub struct WeightedSum {
    terms: Vec<(f64, Box<dyn Reward>)>,
}

impl WeightedSum {
    /// Terms (weight, reward); all must take rows of the same length.
    pub fn new(terms: Vec<(f64, Box<dyn Reward>)>) -> Result<Self> {
        let first =
            terms.first().ok_or_else(|| Error::config("reward.terms: a weighted_sum needs at least one term"))?;
        let d = first.1.input_dim();
        for (w, r) in &terms {
            if !w.is_finite() {
                return Err(Error::config(format!("reward.terms: weight {w} of {} is not finite", r.name())));
            }
            if r.input_dim() != d {
                return Err(Error::config(format!(
                    "reward.terms: {} takes rows of {}, {} takes {d}",
                    r.name(),
                    r.input_dim(),
                    first.1.name()
                )));
            }
        }
        Ok(WeightedSum { terms })
    }
}

impl Reward for WeightedSum {
    fn name(&self) -> String {
        let parts: Vec<String> = self.terms.iter().map(|(w, r)| format!("{w}·{}", r.name())).collect();
        format!("weighted_sum({})", parts.join(" + "))
    }
    fn differentiable(&self) -> bool {
        self.terms.iter().all(|(_, r)| r.differentiable())
    }
    fn scale(&self) -> String {
        let parts: Vec<String> = self.terms.iter().map(|(w, r)| format!("{w}×[{}]", r.scale())).collect();
        parts.join(" + ")
    }
    fn input_dim(&self) -> usize {
        self.terms[0].1.input_dim()
    }
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()> {
        out.iter_mut().for_each(|o| *o = 0.0);
        let mut tmp = vec![0f64; out.len()];
        for (w, r) in &self.terms {
            r.score(y, cond, &mut tmp)?;
            out.iter_mut().zip(&tmp).for_each(|(o, t)| *o += w * t);
        }
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        out.iter_mut().for_each(|o| *o = 0.0);
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut tmp = vec![0f64; out.len()];
        let mut gt = vec![0f32; grad.len()];
        for (w, r) in &self.terms {
            r.score_grad(y, cond, &mut tmp, &mut gt)?;
            out.iter_mut().zip(&tmp).for_each(|(o, t)| *o += w * t);
            grad.iter_mut().zip(&gt).for_each(|(g, t)| *g += (*w as f32) * t);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewards::quadratic::Quadratic;

    #[test]
    fn sum_and_gradient_are_linear_in_the_terms() {
        let a = Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 1.0]], vec![0.1, 0.0], 0.0).unwrap();
        let b = Quadratic::new(vec![vec![0.5, 0.1], vec![0.1, 0.3]], vec![0.0, -0.2], 1.0).unwrap();
        let s = WeightedSum::new(vec![(0.25, Box::new(a.clone())), (0.75, Box::new(b.clone()))]).unwrap();
        let x = [0.3f32, -0.7, 1.2, 0.4];
        let (mut r, mut g) = ([0f64; 2], [0f32; 4]);
        s.score_grad(&x, &Cond::None, &mut r, &mut g).unwrap();
        let (mut ra, mut ga, mut rb, mut gb) = ([0f64; 2], [0f32; 4], [0f64; 2], [0f32; 4]);
        a.score_grad(&x, &Cond::None, &mut ra, &mut ga).unwrap();
        b.score_grad(&x, &Cond::None, &mut rb, &mut gb).unwrap();
        for i in 0..2 {
            assert!((r[i] - (0.25 * ra[i] + 0.75 * rb[i])).abs() < 1e-12);
        }
        for i in 0..4 {
            assert!((g[i] - (0.25 * ga[i] + 0.75 * gb[i])).abs() < 1e-6);
        }
        assert!(s.differentiable() && s.name().contains("0.25·"));
    }

    #[test]
    fn mismatched_terms_are_refused() {
        let a = Quadratic::new(vec![vec![1.0]], vec![0.0], 0.0).unwrap();
        let b = Quadratic::new(vec![vec![1.0, 0.0], vec![0.0, 1.0]], vec![0.0, 0.0], 0.0).unwrap();
        assert!(WeightedSum::new(vec![(1.0, Box::new(a)), (1.0, Box::new(b))]).is_err());
        assert!(WeightedSum::new(vec![]).is_err());
    }
}

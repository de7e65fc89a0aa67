//! `brightness`: the mean pixel value of an image in [0, 1], r(y) = (1/D)·Σ_j y_j — a **test / demo** reward that
//! needs no weight files. It is differentiable (∇_y r = 1/D for every pixel), so gradient methods (DAS, DPS, …) can
//! be exercised end to end on any image problem, e.g. the tiny random Stable Diffusion of the tests. It measures
//! nothing anyone prefers; never report it as an alignment result.

use super::Reward;
use crate::diffusion::Cond;
use crate::{Error, Result};

/// Mean pixel value of images of a declared shape [c, h, w].
#[derive(Clone, Debug)]
pub struct Brightness {
    dim: usize,
}

impl Brightness {
    /// Build for images of shape `[c, h, w]`.
    pub fn new(shape: [usize; 3]) -> Result<Self> {
        let dim: usize = shape.iter().product();
        if dim == 0 {
            return Err(Error::config(format!("brightness: image shape {shape:?} has a zero dimension")));
        }
        Ok(Brightness { dim })
    }

    fn rows(&self, y: &[f32], n_out: usize) -> Result<usize> {
        if y.len() % self.dim != 0 || y.len() / self.dim != n_out {
            return Err(Error::config(format!(
                "brightness: {} values for {n_out} images of {} values",
                y.len(),
                self.dim
            )));
        }
        Ok(n_out)
    }
}

impl Reward for Brightness {
    fn name(&self) -> String {
        "brightness".into()
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn scale(&self) -> String {
        "mean pixel value in [0, 1] (test/demo reward)".into()
    }
    fn input_dim(&self) -> usize {
        self.dim
    }
    fn score(&self, y: &[f32], _cond: &Cond, out: &mut [f64]) -> Result<()> {
        self.rows(y, out.len())?;
        for (row, o) in y.chunks_exact(self.dim).zip(out.iter_mut()) {
            *o = row.iter().map(|&v| v as f64).sum::<f64>() / self.dim as f64;
        }
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        self.score(y, cond, out)?;
        if grad.len() != y.len() {
            return Err(Error::config(format!("brightness: gradient buffer of {} for {} values", grad.len(), y.len())));
        }
        grad.fill(1.0 / self.dim as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brightness_is_the_mean_pixel_with_a_constant_gradient() {
        let r = Brightness::new([3, 2, 2]).unwrap();
        let y: Vec<f32> = (0..24).map(|i| i as f32 / 23.0).collect();
        let (mut out, mut g) = ([0f64; 2], vec![0f32; 24]);
        r.score_grad(&y, &Cond::None, &mut out, &mut g).unwrap();
        let m0 = (0..12).map(|i| i as f64 / 23.0).sum::<f64>() / 12.0;
        assert!((out[0] - m0).abs() < 1e-6 && out[1] > out[0]);
        assert!(g.iter().all(|&v| (v - 1.0 / 12.0).abs() < 1e-7));
        assert!(r.differentiable() && Brightness::new([3, 0, 2]).is_err());
        assert!(r.score(&y[..20], &Cond::None, &mut out).is_err());
    }
}

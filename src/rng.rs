//! Named, seeded random streams (ChaCha8). Never use a backend's unseeded generator.
//!
//! A stream is addressed by `(seed, purpose, group, step)`; particles draw from it sequentially, so particle `k`
//! always receives the same numbers whatever the particle count (a run with K = 8 contains the K = 4 run's noise)
//! and whatever the method (common random numbers, methods.md §0.6). The method is deliberately *not* part of the
//! key: every method of a cell family sees the same initial noise and the same step noise.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// What a stream is used for. Each purpose is an independent family of streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Purpose {
    /// Initial noise x_T.
    Init = 1,
    /// Per-step proposal noise z_i.
    Step = 2,
    /// Uniforms for resampling.
    Resample = 3,
    /// Children of SVDD / extra proposals.
    Children = 4,
    /// Time-travel re-noising (FreeDoM).
    Travel = 5,
    /// Exact samples from a target distribution.
    Target = 6,
    /// Bootstrap draws inside metrics (EMD protocol).
    Metric = 7,
    /// Training (data, timesteps, initialisation).
    Train = 8,
    /// Output selection.
    Select = 9,
    /// Tree growth of DTS: expansion noise and selection draws.
    Tree = 10,
    /// MCMC chains on the initial noise (Ψ-sampler's pCNL).
    Chain = 11,
    /// Candidates of the search-over-noises methods (zero-order, path and beam search).
    Search = 12,
}

/// SplitMix64 finaliser: a bijective mixer used to derive stream keys.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The root of all randomness of one run: a seed.
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    seed: u64,
}

impl Streams {
    /// Streams rooted at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
    /// The root seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The generator for `(purpose, group, step)`.
    pub fn rng(&self, purpose: Purpose, group: u64, step: u64) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        let words = [
            mix64(self.seed ^ 0xA1B2_C3D4),
            mix64(self.seed.wrapping_add(purpose as u64).wrapping_mul(0x100_0000_01B3)),
            mix64(group ^ mix64(purpose as u64)),
            mix64(step.wrapping_add(0x5151) ^ mix64(group)),
        ];
        for (i, w) in words.iter().enumerate() {
            key[i * 8..(i + 1) * 8].copy_from_slice(&w.to_le_bytes());
        }
        ChaCha8Rng::from_seed(key)
    }
    /// Fill `out` with standard normal draws from `(purpose, group, step)`.
    pub fn normals(&self, purpose: Purpose, group: u64, step: u64, out: &mut [f32]) {
        let mut rng = self.rng(purpose, group, step);
        fill_normal(&mut rng, out);
    }
}

/// Fill a slice with standard normals from `rng`.
pub fn fill_normal<R: RngCore>(rng: &mut R, out: &mut [f32]) {
    for v in out.iter_mut() {
        let z: f64 = StandardNormal.sample(rng);
        *v = z as f32;
    }
}

/// One uniform in [0, 1).
pub fn uniform<R: RngCore>(rng: &mut R) -> f64 {
    rng.random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let s = Streams::new(42);
        let mut a = vec![0f32; 8];
        let mut b = vec![0f32; 8];
        s.normals(Purpose::Step, 3, 7, &mut a);
        s.normals(Purpose::Step, 3, 7, &mut b);
        assert_eq!(a, b);
        s.normals(Purpose::Step, 3, 8, &mut b);
        assert_ne!(a, b);
        s.normals(Purpose::Init, 3, 7, &mut b);
        assert_ne!(a, b);
        Streams::new(43).normals(Purpose::Step, 3, 7, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn prefix_property() {
        let s = Streams::new(1);
        let mut small = vec![0f32; 4 * 2];
        let mut big = vec![0f32; 8 * 2];
        s.normals(Purpose::Init, 0, 0, &mut small);
        s.normals(Purpose::Init, 0, 0, &mut big);
        assert_eq!(&big[..8], &small[..]);
    }
}

//! Seeded random weights for any model built through a [`VarBuilder`]: the model's own constructor decides which
//! tensors exist (so the keys are exactly those a checkpoint would need), and each tensor is drawn from a
//! `crate::rng` stream keyed by its name — never candle's unseedable `randn`, never `VarMap`'s zero default.
//!
//! Values: 1-D `*.weight` (norm γ) ~ 1 + 0.1·N; `*.bias` ~ 0.1·N; `*token_embedding*`/`*position_embedding*`
//! ~ 0.5·N; every other weight ~ N/√fan_in (fan_in = product of all but the first dimension).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::rng::{fill_normal, mix64, Purpose, Streams};
use crate::Result;

/// Tensors made so far, by full key, as f32 on the CPU (only when recording).
pub type Recorded = Arc<Mutex<BTreeMap<String, Tensor>>>;

struct RandomBackend {
    seed: u64,
    record: Option<Recorded>,
}

fn key_hash(name: &str) -> u64 {
    name.bytes().fold(0x5D_u64, |h, b| mix64(h ^ b as u64))
}

/// (mean, std) of the random initialisation of tensor `name` with `dims`.
pub fn init_stats(name: &str, dims: &[usize]) -> (f32, f32) {
    if name.ends_with(".bias") {
        (0.0, 0.1)
    } else if dims.len() == 1 {
        (1.0, 0.1)
    } else if name.contains("token_embedding") || name.contains("position_embedding") {
        (0.0, 0.5)
    } else {
        let fan_in: usize = dims[1..].iter().product();
        (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
    }
}

impl SimpleBackend for RandomBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let dims = s.dims().to_vec();
        let (mean, std) = init_stats(name, &dims);
        let mut v = vec![0f32; s.elem_count()];
        fill_normal(&mut Streams::new(self.seed).rng(Purpose::Train, key_hash(name), 0x5D), &mut v);
        v.iter_mut().for_each(|x| *x = mean + std * *x);
        let t = Tensor::from_vec(v, s, &Device::Cpu)?;
        if let Some(r) = &self.record {
            r.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), t.clone());
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: `{name}` was requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A [`VarBuilder`] that creates seeded random tensors on request; with `record`, every tensor made is also kept
/// (f32, CPU) under its full key, e.g. to write a checkpoint.
pub fn random_var_builder(seed: u64, dtype: DType, device: &Device, record: Option<Recorded>) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomBackend { seed, record }), dtype, device.clone())
}

/// Build a model with seeded random weights and return it with its tensors by key (f32, CPU).
pub fn random_model<T>(
    seed: u64,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<(T, BTreeMap<String, Tensor>)> {
    let rec: Recorded = Arc::new(Mutex::new(BTreeMap::new()));
    let model = build(random_var_builder(seed, dtype, device, Some(rec.clone())))?;
    let map = std::mem::take(&mut *rec.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((model, map))
}

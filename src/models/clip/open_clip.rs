//! Loading open_clip checkpoints (HPSv2, rewards.md §4) into the HF `CLIPModel` layout of [`super::ClipModel`].

use std::collections::HashMap;

use candle_core::Tensor;

use crate::{Error, Result};

/// Renames an open_clip state dict (HPSv2 checkpoints, rewards.md §4) to the HF `CLIPModel` layout loaded by
/// [`ClipModel::new`].
///
/// Maps `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
/// `visual.transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`, `visual.ln_post`, `visual.proj`,
/// `token_embedding`, `positional_embedding`, `transformer.resblocks.N...`, `ln_final`, `text_projection` and
/// `logit_scale`. The fused `attn.in_proj_{weight,bias}` ([3w, w], [3w]) is split into `q_proj`, `k_proj`,
/// `v_proj` (in that order, as `nn.MultiheadAttention`), and the projections `visual.proj`, `text_projection`
/// ([width, proj], applied as x·P) are transposed to HF's [proj, width]. Non-parameter entries of older state
/// dicts ([`IGNORED_OPEN_CLIP_KEYS`]) are dropped; any other unknown key is an error naming it.
pub fn open_clip_to_hf(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len() + 16);
    for (key, t) in tensors {
        let (prefix, rest) =
            if let Some(r) = key.strip_prefix("visual.") { ("vision_model", r) } else { ("text_model", key.as_str()) };
        let vision = prefix == "vision_model";
        if IGNORED_OPEN_CLIP_KEYS.contains(&rest) {
            continue;
        }
        let simple = |name: &str| -> Option<String> {
            let m = match (vision, name) {
                (true, "conv1.weight") => "vision_model.embeddings.patch_embedding.weight",
                (true, "class_embedding") => "vision_model.embeddings.class_embedding",
                (true, "positional_embedding") => "vision_model.embeddings.position_embedding.weight",
                (true, "ln_pre.weight") => "vision_model.pre_layrnorm.weight",
                (true, "ln_pre.bias") => "vision_model.pre_layrnorm.bias",
                (true, "ln_post.weight") => "vision_model.post_layernorm.weight",
                (true, "ln_post.bias") => "vision_model.post_layernorm.bias",
                (false, "token_embedding.weight") => "text_model.embeddings.token_embedding.weight",
                (false, "positional_embedding") => "text_model.embeddings.position_embedding.weight",
                (false, "ln_final.weight") => "text_model.final_layer_norm.weight",
                (false, "ln_final.bias") => "text_model.final_layer_norm.bias",
                (false, "logit_scale") => "logit_scale",
                _ => return None,
            };
            Some(m.to_string())
        };
        if let Some(name) = simple(rest) {
            out.insert(name, t);
        } else if (vision && rest == "proj") || (!vision && rest == "text_projection") {
            let name = if vision { "visual_projection.weight" } else { "text_projection.weight" };
            out.insert(name.to_string(), t.t()?.contiguous()?);
        } else if let Some(r) = rest.strip_prefix("transformer.resblocks.") {
            let (layer, sub) =
                r.split_once('.').filter(|(l, _)| l.parse::<usize>().is_ok()).ok_or_else(|| unknown_key(&key))?;
            let base = format!("{prefix}.encoder.layers.{layer}");
            match sub {
                "attn.in_proj_weight" | "attn.in_proj_bias" => {
                    let kind = if sub.ends_with("weight") { "weight" } else { "bias" };
                    let rows = t.dim(0)?;
                    if rows % 3 != 0 {
                        return Err(Error::config(format!("open_clip: {key} has {rows} rows, not 3 × width")));
                    }
                    let w = rows / 3;
                    for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        out.insert(format!("{base}.self_attn.{p}.{kind}"), t.narrow(0, i * w, w)?.contiguous()?);
                    }
                }
                _ => {
                    let (module, param) = sub.rsplit_once('.').ok_or_else(|| unknown_key(&key))?;
                    let hf = match module {
                        "ln_1" => "layer_norm1",
                        "ln_2" => "layer_norm2",
                        "attn.out_proj" => "self_attn.out_proj",
                        "mlp.c_fc" => "mlp.fc1",
                        "mlp.c_proj" => "mlp.fc2",
                        _ => return Err(unknown_key(&key)),
                    };
                    if param != "weight" && param != "bias" {
                        return Err(unknown_key(&key));
                    }
                    out.insert(format!("{base}.{hf}.{param}"), t);
                }
            }
        } else {
            return Err(unknown_key(&key));
        }
    }
    Ok(out)
}

/// Non-parameter entries that some open_clip / OpenAI state dicts carry (the causal mask buffer and the integer
/// metadata of JIT-exported OpenAI models); [`open_clip_to_hf`] drops them.
pub const IGNORED_OPEN_CLIP_KEYS: [&str; 4] = ["attn_mask", "input_resolution", "context_length", "vocab_size"];

fn unknown_key(key: &str) -> Error {
    Error::config(format!(
        "open_clip: unexpected key `{key}` (not a standard open_clip CLIP tensor); strip wrappers such as \
         `module.` or `state_dict` before mapping"
    ))
}

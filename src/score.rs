//! `alignbench score`: score image files with any image reward, on the rewards' official evaluation path
//! (uint8 → bicubic shortest-side resize → centre crop → normalisation, rewards.md §0), to check a reward against
//! published values with real weights (docs/verify-rewards.md; golden values in rewards.md §7).
//!
//! Images (PNG, JPEG, BMP) are decoded with the `image` crate, converted to RGB (alpha dropped, as PIL's
//! `convert("RGB")`), scaled to [0, 1] as [3, h, w], grouped by size and scored in batches. The reward is a kind
//! (`image_reward`, `aesthetic`, … with default settings) or a YAML file holding one reward spec (the `reward:` block
//! of an experiment, with or without the `reward:` key); every CLIP/BLIP reward in it is switched to the official
//! preprocessing. Prompts: one `--prompt` for all images, one per image in order, or none for unconditional rewards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diffusion::Cond;
use crate::rewards::build::image_reward;
use crate::rewards::image_configs::Preprocess;
use crate::rewards::spec::RewardSpec;
use crate::{Error, Result};

/// Options of `alignbench score`.
#[derive(clap::Args, Clone, Debug)]
pub struct ScoreArgs {
    /// Reward: a kind (image_reward, aesthetic, pickscore, hpsv2, clip_score, jpeg_compressibility) or the path of a
    /// YAML file holding a reward spec.
    #[arg(long)]
    pub reward: String,
    /// Models folder (default: the spec's `weights:`, else env ALIGNBENCH_MODELS).
    #[arg(long)]
    pub weights: Option<String>,
    /// Prompt: once for all images, or once per image in order.
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// Images scored per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Image files (PNG, JPEG, BMP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// A YAML reward file: the spec itself, or an experiment-style `reward:` block.
#[derive(Deserialize)]
#[serde(untagged)]
enum RewardFile {
    Bare(RewardSpec),
    Wrapped { reward: RewardSpec },
}

/// The reward spec of `--reward`: a YAML file if `arg` names an existing file (or ends in .yaml / .yml), inline YAML
/// if it contains a `:` (e.g. `{kind: image_reward, output: normalized}`), else a kind with default settings.
pub fn parse_reward_arg(arg: &str) -> Result<RewardSpec> {
    let path = Path::new(arg);
    let is_yaml = matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    if path.is_file() || is_yaml {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        return parse_reward_yaml(&text).map_err(|e| Error::file(path, e));
    }
    if arg.contains(':') {
        return parse_reward_yaml(arg).map_err(|e| Error::config(format!("--reward `{arg}`: {e}")));
    }
    yaml_serde::from_str::<RewardSpec>(&format!("kind: {arg}")).map_err(|e| {
        Error::config(format!(
            "--reward `{arg}`: not a reward kind with default settings ({e}); give a kind (image_reward, aesthetic, \
             pickscore, hpsv2, clip_score, jpeg_compressibility) or a YAML file"
        ))
    })
}

fn parse_reward_yaml(text: &str) -> std::result::Result<RewardSpec, String> {
    match yaml_serde::from_str::<RewardFile>(text) {
        Ok(RewardFile::Bare(s)) | Ok(RewardFile::Wrapped { reward: s }) => Ok(s),
        Err(_) => {
            let e = yaml_serde::from_str::<RewardSpec>(text).err().map(|e| e.to_string()).unwrap_or_default();
            Err(format!("not a reward spec (`kind: …` or `reward: {{kind: …}}`): {e}"))
        }
    }
}

/// `spec` with every CLIP/BLIP reward on the official preprocessing path (recursively through `weighted_sum`).
pub fn official(spec: &RewardSpec) -> RewardSpec {
    let mut s = spec.clone();
    match &mut s {
        RewardSpec::Aesthetic(c) => c.preprocess = Preprocess::Official,
        RewardSpec::Pickscore(c) => c.preprocess = Preprocess::Official,
        RewardSpec::Hpsv2(c) => c.preprocess = Preprocess::Official,
        RewardSpec::ClipScore(c) => c.preprocess = Preprocess::Official,
        RewardSpec::ImageReward(c) => c.preprocess = Preprocess::Official,
        RewardSpec::WeightedSum { terms } => terms.iter_mut().for_each(|t| t.reward = official(&t.reward)),
        _ => {}
    }
    s
}

/// Decodes an image file to RGB [3, h, w] in [0, 1]; errors name the file.
pub fn load_image(path: &Path) -> Result<([usize; 3], Vec<f32>)> {
    let img = image::open(path).map_err(|e| {
        let hint = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("webp")) {
            " (WebP is not decoded by this build: convert to PNG first, e.g. `dwebp in.webp -o out.png`)"
        } else {
            ""
        };
        Error::file(path, format!("cannot decode the image: {e}{hint}"))
    })?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let raw = rgb.as_raw();
    let mut chw = vec![0f32; 3 * h * w];
    for (i, px) in raw.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = px[c] as f32 / 255.0;
        }
    }
    Ok(([3, h, w], chw))
}

/// Scores the images of `args` and returns a printable table (file, prompt, score) with the reward's name and scale.
pub fn run_score(args: &ScoreArgs) -> Result<String> {
    let spec = official(&parse_reward_arg(&args.reward)?);
    let n = args.images.len();
    if n == 0 {
        return Err(Error::config("score: give at least one image file"));
    }
    let prompt_of: Vec<Option<&str>> = match args.prompts.len() {
        0 => vec![None; n],
        1 => vec![Some(args.prompts[0].as_str()); n],
        k if k == n => args.prompts.iter().map(|p| Some(p.as_str())).collect(),
        k => {
            return Err(Error::config(format!(
                "score: {k} prompts for {n} images; give one --prompt for all images or one per image"
            )))
        }
    };
    let mut prompts: Vec<String> = Vec::new();
    let labels: Vec<Option<usize>> = prompt_of
        .iter()
        .map(|p| {
            p.map(|p| match prompts.iter().position(|q| q == p) {
                Some(i) => i,
                None => {
                    prompts.push(p.to_string());
                    prompts.len() - 1
                }
            })
        })
        .collect();
    let images = args.images.iter().map(|p| load_image(p)).collect::<Result<Vec<_>>>()?;
    let mut by_shape: BTreeMap<[usize; 3], Vec<usize>> = BTreeMap::new();
    for (i, (shape, _)) in images.iter().enumerate() {
        by_shape.entry(*shape).or_default().push(i);
    }
    let mut scores = vec![f64::NAN; n];
    let mut header = None;
    for (shape, idx) in &by_shape {
        let reward = image_reward(&spec, *shape, &prompts, args.weights.as_deref())?;
        header.get_or_insert_with(|| (reward.name(), reward.scale()));
        for chunk in idx.chunks(args.batch.max(1)) {
            let y: Vec<f32> = chunk.iter().flat_map(|&i| images[i].1.iter().copied()).collect();
            let cond = if prompts.is_empty() {
                Cond::None
            } else {
                Cond::Labels(chunk.iter().map(|&i| labels[i].unwrap_or(0)).collect())
            };
            let mut out = vec![0f64; chunk.len()];
            reward.score(&y, &cond, &mut out).map_err(|e| {
                let files: Vec<String> = chunk.iter().map(|&i| args.images[i].display().to_string()).collect();
                Error::config(format!("score: {} failed on {}: {e}", reward.name(), files.join(", ")))
            })?;
            for (&i, s) in chunk.iter().zip(out) {
                scores[i] = s;
            }
        }
    }
    let (name, scale) = header.unwrap_or_default();
    let rows: Vec<[String; 3]> = (0..n)
        .map(|i| {
            [args.images[i].display().to_string(), prompt_of[i].unwrap_or("-").to_string(), format!("{:.5}", scores[i])]
        })
        .collect();
    Ok(format_table(&name, &scale, &rows))
}

fn format_table(name: &str, scale: &str, rows: &[[String; 3]]) -> String {
    let head = ["file", "prompt", "score"];
    let width = |k: usize| rows.iter().map(|r| r[k].chars().count()).chain([head[k].len()]).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    let mut s = format!("reward: {name}\nscale: {scale}\n");
    s += &format!("{:<w0$}  {:<w1$}  {:>9}\n", head[0], head[1], head[2]);
    for r in rows {
        s += &format!("{:<w0$}  {:<w1$}  {:>9}\n", r[0], r[1], r[2]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewards::image_configs::ImageRewardOutput;

    fn write_png(dir: &Path, name: &str, w: u32, h: u32, noisy: bool) -> PathBuf {
        let p = dir.join(name);
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            if noisy {
                let v = (x.wrapping_mul(7919) ^ y.wrapping_mul(104729)).wrapping_mul(2654435761) >> 24;
                image::Rgb([v as u8, (v as u8).wrapping_mul(3), (v as u8).wrapping_add(91)])
            } else {
                image::Rgb([120, 130, 140])
            }
        });
        img.save(&p).unwrap();
        p
    }

    fn args(reward: &str, images: Vec<PathBuf>) -> ScoreArgs {
        ScoreArgs { reward: reward.into(), weights: None, prompts: vec![], batch: 2, images }
    }

    #[test]
    fn scores_pngs_with_jpeg_compressibility() {
        let tmp = tempfile::tempdir().unwrap();
        let flat = write_png(tmp.path(), "flat.png", 32, 24, false);
        let noisy = write_png(tmp.path(), "noisy.png", 32, 24, true);
        let other = write_png(tmp.path(), "small.png", 16, 16, false);
        let out = run_score(&args("jpeg_compressibility", vec![flat.clone(), noisy, other])).unwrap();
        println!("{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("reward: ") && lines[1].starts_with("scale: "), "{out}");
        assert!(lines[2].starts_with("file") && lines[2].ends_with("    score"), "{out}");
        let score = |l: &str| l.split_whitespace().last().unwrap().parse::<f64>().unwrap();
        let (s_flat, s_noisy) = (score(lines[3]), score(lines[4]));
        assert!(lines[3].contains("flat.png") && lines[4].contains("noisy.png") && lines[5].contains("small.png"));
        assert!(s_flat < 0.0 && s_noisy < s_flat, "noise compresses worse: {s_flat} vs {s_noisy}");
        // The same reward from a YAML file (bare or under `reward:`) gives the same numbers.
        let y = tmp.path().join("r.yaml");
        std::fs::write(&y, "reward:\n  kind: jpeg_compressibility\n  quality: 95\n").unwrap();
        let out2 = run_score(&args(y.to_str().unwrap(), vec![flat.clone()])).unwrap();
        assert!((score(out2.lines().nth(3).unwrap()) - s_flat).abs() < 1e-12);
        std::fs::write(&y, "kind: jpeg_compressibility\n").unwrap();
        assert!(run_score(&args(y.to_str().unwrap(), vec![flat])).is_ok());
    }

    #[test]
    fn errors_name_the_file_the_weights_and_the_prompts() {
        let tmp = tempfile::tempdir().unwrap();
        let img = write_png(tmp.path(), "a.png", 8, 8, false);
        let missing = tmp.path().join("missing.png");
        let e = run_score(&args("jpeg_compressibility", vec![img.clone(), missing])).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
        let bad = tmp.path().join("bad.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let e = run_score(&args("jpeg_compressibility", vec![bad])).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.contains("decode"), "{e}");
        // A missing weights folder names the file the reward needs and where to get it.
        let mut a = args("image_reward", vec![img.clone()]);
        a.prompts = vec!["a cat".into()];
        a.weights = Some(tmp.path().join("no-models").display().to_string());
        let e = run_score(&a).unwrap_err().to_string();
        assert!(e.contains("no-models") && e.contains("med_config.json") && e.contains("huggingface"), "{e}");
        a.reward = "aesthetic".into();
        let e = run_score(&a).unwrap_err().to_string();
        assert!(e.contains("clip-vit-large-patch14") && e.contains("model.safetensors"), "{e}");
        a.prompts = vec!["x".into(), "y".into()];
        let e = run_score(&a).unwrap_err().to_string();
        assert!(e.contains("2 prompts for 1 images"), "{e}");
        let e = run_score(&args("no_such_reward", vec![img])).unwrap_err().to_string();
        assert!(e.contains("no_such_reward"), "{e}");
    }

    #[test]
    fn official_switches_every_term() {
        let spec = parse_reward_arg("image_reward").unwrap();
        let inline = parse_reward_arg("{kind: image_reward, output: normalized}").unwrap();
        assert!(matches!(&inline, RewardSpec::ImageReward(c) if c.output == ImageRewardOutput::Normalized));
        let e = parse_reward_arg("{kind: image_reward, outptu: raw}").unwrap_err().to_string();
        assert!(e.contains("outptu"), "{e}");
        match official(&spec) {
            RewardSpec::ImageReward(c) => assert_eq!(c.preprocess, Preprocess::Official),
            other => panic!("{other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        let y = tmp.path().join("multi.yaml");
        std::fs::write(
            &y,
            "kind: weighted_sum\nterms:\n  - {weight: 1.0, reward: {kind: aesthetic}}\n  - {weight: 20.0, reward: \
             {kind: clip_score}}\n",
        )
        .unwrap();
        let RewardSpec::WeightedSum { terms } = official(&parse_reward_arg(y.to_str().unwrap()).unwrap()) else {
            panic!()
        };
        assert!(matches!(&terms[0].reward, RewardSpec::Aesthetic(c) if c.preprocess == Preprocess::Official));
        assert!(matches!(&terms[1].reward, RewardSpec::ClipScore(c) if c.preprocess == Preprocess::Official));
    }

    /// The wiring the CLI uses: `Score(ScoreArgs)` as a subcommand.
    #[test]
    fn parses_as_a_clap_subcommand() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(clap::Subcommand)]
        enum Cmd {
            Score(ScoreArgs),
        }
        let argv =
            ["alignbench", "score", "--reward", "image_reward", "--prompt", "a", "--prompt", "b", "1.png", "2.png"];
        let Cmd::Score(a) = Cli::try_parse_from(argv).unwrap().cmd;
        assert_eq!((a.reward.as_str(), a.prompts.len(), a.images.len(), a.batch), ("image_reward", 2, 2, 8));
        assert!(a.weights.is_none());
        assert!(Cli::try_parse_from(["alignbench", "score", "--reward", "x"]).is_err(), "images are required");
    }

    #[test]
    fn loads_rgb_planes_in_unit_range() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("rgba.png");
        image::RgbaImage::from_fn(3, 2, |x, _| image::Rgba([255, (x * 100) as u8, 0, 7])).save(&p).unwrap();
        let (shape, v) = load_image(&p).unwrap();
        assert_eq!(shape, [3, 2, 3]);
        assert_eq!(&v[..3], &[1.0, 1.0, 1.0]);
        assert_eq!(&v[6..9], &[0.0, 100.0 / 255.0, 200.0 / 255.0]);
        assert!(v[12..].iter().all(|&x| x == 0.0));
    }
}

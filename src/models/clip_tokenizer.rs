//! The CLIP byte-level BPE tokenizer (Radford et al. 2021; BPE of Sennrich et al. 2016 over the byte alphabet of
//! GPT-2), read from a local HF `tokenizer/` folder (`vocab.json` + `merges.txt`).
//!
//! Pipeline, as OpenAI's `simple_tokenizer.py` and HF `CLIPTokenizer`:
//! 1. whitespace cleanup (runs of whitespace → one space, trimmed), lower-casing;
//! 2. `<|startoftext|>` / `<|endoftext|>` written in the text are split off as special tokens;
//! 3. pre-tokenisation with the semantics of CLIP's pattern
//!    `'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` (contractions, letter runs, single digits, runs of
//!    other non-space characters), written as a small scanner;
//! 4. each piece's UTF-8 bytes are mapped to printable characters (GPT-2 byte-to-unicode table), the last symbol
//!    gets the end-of-word mark `</w>`, and merges are applied by rank (lowest first) until none applies;
//! 5. `<|startoftext|>` + ids + `<|endoftext|>`, truncated to the context length (the last kept id is
//!    `<|endoftext|>`), padded with the configured pad id.
//!
//! Deviations, stated: no `ftfy` text repair and no Unicode normalisation; `\p{L}` is approximated by
//! `char::is_alphabetic() && !char::is_numeric()`, which also counts combining marks with the Other_Alphabetic
//! property (e.g. Devanagari vowel signs) as letters. For ASCII and Latin text the output is identical.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The start-of-text special token.
pub const START_OF_TEXT: &str = "<|startoftext|>";
/// The end-of-text special token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Merges read from `merges.txt`: OpenAI's `simple_tokenizer.py` and HF's slow `CLIPTokenizer` keep the first
/// 49152 − 256 − 2 = 48,894 merges (vocabulary 49,408 = 256 bytes × 2 + merges + 2 specials).
pub const MAX_MERGES: usize = 49152 - 256 - 2;

/// The CLIP BPE tokenizer.
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    sot: u32,
    eot: u32,
    pad: u32,
    context_length: usize,
}

/// A piece of pre-tokenised text.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Special(u32),
    Word(&'a str),
}

impl ClipTokenizer {
    /// Reads `vocab.json` (token → id) and `merges.txt` (one merge "a b" per line; a leading `#version` line is
    /// skipped; at most [`MAX_MERGES`] merges are used) from a HF `tokenizer/` folder layout. Pads with `<|endoftext|>` (HF openai) and uses context 77.
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Self> {
        let vocab = std::fs::read_to_string(vocab_json)
            .map_err(|e| Error::file(vocab_json, format!("cannot read CLIP vocabulary: {e}")))?;
        let merges = std::fs::read_to_string(merges_txt)
            .map_err(|e| Error::file(merges_txt, format!("cannot read CLIP merges: {e}")))?;
        Self::from_strs(&vocab, &merges).map_err(|e| {
            Error::file(vocab_json.parent().unwrap_or(vocab_json), format!("invalid CLIP tokenizer files: {e}"))
        })
    }

    /// A tokenizer from the contents of `vocab.json` and `merges.txt` (see [`ClipTokenizer::from_files`]).
    pub fn from_strs(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        let encoder: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|e| Error::config(format!("vocab.json is not a JSON object of token → id: {e}")))?;
        Self::from_parts(encoder, parse_merges(merges_txt)?)
    }

    /// A tokenizer from the merges alone, deriving the vocabulary as OpenAI's `simple_tokenizer.py` and open_clip
    /// do (their `bpe_simple_vocab_16e6.txt`): the 256 byte symbols in byte-to-unicode order (printable bytes
    /// first), the same with `</w>`, one token per merge in rank order, then `<|startoftext|>`, `<|endoftext|>`.
    /// With the full merge list this reproduces HF's `vocab.json` ids (`a</w>` = 320, specials 49406, 49407).
    pub fn from_merges(merges_txt: &str) -> Result<Self> {
        let merges = parse_merges(merges_txt)?;
        let table = bytes_to_unicode();
        let mut order: Vec<u8> = (0..=255u8).filter(|&b| is_printable_byte(b)).collect();
        order.extend((0..=255u8).filter(|&b| !is_printable_byte(b)));
        let mut vocab: Vec<String> = order.iter().map(|&b| table[b as usize].to_string()).collect();
        vocab.extend(order.iter().map(|&b| format!("{}</w>", table[b as usize])));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push(START_OF_TEXT.to_string());
        vocab.push(END_OF_TEXT.to_string());
        let encoder = vocab.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        Self::from_parts(encoder, merges)
    }

    fn from_parts(encoder: HashMap<String, u32>, merges: Vec<(String, String)>) -> Result<Self> {
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, pair) in merges.into_iter().enumerate() {
            ranks.entry(pair).or_insert(rank);
        }
        let special =
            |s: &str| encoder.get(s).copied().ok_or_else(|| Error::config(format!("vocab.json has no `{s}` token")));
        let (sot, eot) = (special(START_OF_TEXT)?, special(END_OF_TEXT)?);
        Ok(Self { encoder, ranks, byte_chars: bytes_to_unicode(), sot, eot, pad: eot, context_length: 77 })
    }

    /// The same tokenizer padding with `pad` (open_clip pads with 0; HF openai with `<|endoftext|>`).
    pub fn with_pad_id(mut self, pad: u32) -> Self {
        self.pad = pad;
        self
    }

    /// The same tokenizer with another context length (≥ 2; 77 for every CLIP here).
    pub fn with_context_length(mut self, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(Error::config(format!("clip tokenizer: context length {context_length} < 2")));
        }
        self.context_length = context_length;
        Ok(self)
    }

    /// Id of `<|startoftext|>`.
    pub fn sot_id(&self) -> u32 {
        self.sot
    }

    /// Id of `<|endoftext|>`.
    pub fn eot_id(&self) -> u32 {
        self.eot
    }

    /// The pad id.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The context length.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// BPE ids of `text` without start/end tokens and without truncation.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let mut ids = Vec::new();
        for piece in self.pre_tokenize(&clean) {
            match piece {
                Piece::Special(id) => ids.push(id),
                Piece::Word(w) => {
                    for sym in self.bpe(w) {
                        let id = self.encoder.get(&sym).ok_or_else(|| {
                            Error::config(format!(
                                "clip tokenizer: BPE symbol `{sym}` (from `{w}`) is not in vocab.json"
                            ))
                        })?;
                        ids.push(*id);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// `<|startoftext|>` + ids + `<|endoftext|>`, truncated to the context length (keeping `<|endoftext|>` last)
    /// and padded with the pad id: exactly `context_length` ids.
    pub fn encode_padded(&self, text: &str) -> Result<Vec<u32>> {
        let body = self.encode(text)?;
        let keep = body.len().min(self.context_length - 2);
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.sot);
        ids.extend_from_slice(&body[..keep]);
        ids.push(self.eot);
        ids.resize(self.context_length, self.pad);
        Ok(ids)
    }

    /// Token ids [n, context_length] (u32) of a batch of prompts, on `device`.
    pub fn batch(&self, texts: &[&str], device: &Device) -> Result<Tensor> {
        let mut all = Vec::with_capacity(texts.len() * self.context_length);
        for t in texts {
            all.extend(self.encode_padded(t)?);
        }
        Ok(Tensor::from_vec(all, (texts.len(), self.context_length), device)?)
    }

    /// Splits cleaned text into special tokens and words with CLIP's pre-tokenisation semantics.
    fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let is_letter = |c: char| c.is_alphabetic() && !c.is_numeric();
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if rest.starts_with(START_OF_TEXT) {
                out.push(Piece::Special(self.sot));
                i += START_OF_TEXT.len();
                continue;
            }
            if rest.starts_with(END_OF_TEXT) {
                out.push(Piece::Special(self.eot));
                i += END_OF_TEXT.len();
                continue;
            }
            let c = rest.chars().next().unwrap_or(' ');
            let len = if c == '\'' {
                // Alternation order of the pattern: 's 't 're 've 'm 'll 'd, else a punctuation run.
                ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
                    .iter()
                    .find(|p| rest.starts_with(*p))
                    .map(|p| p.len())
                    .unwrap_or_else(|| run_len(rest, |c| !c.is_whitespace() && !is_letter(c) && !c.is_numeric()))
            } else if c.is_whitespace() {
                i += c.len_utf8();
                continue;
            } else if is_letter(c) {
                run_len(rest, is_letter)
            } else if c.is_numeric() {
                c.len_utf8()
            } else {
                run_len(rest, |c| !c.is_whitespace() && !is_letter(c) && !c.is_numeric())
            };
            out.push(Piece::Word(&rest[..len]));
            i += len;
        }
        out
    }

    /// BPE symbols of one pre-token: bytes → printable characters, `</w>` on the last symbol, merges by rank.
    fn bpe(&self, word: &str) -> Vec<String> {
        let mut syms: Vec<String> = word.bytes().map(|b| self.byte_chars[b as usize].to_string()).collect();
        if let Some(last) = syms.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = syms
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0].clone(), p[1].clone())).map(|&r| (r, p[0].clone(), p[1].clone())))
                .min_by_key(|(r, _, _)| *r);
            let Some((_, a, b)) = best else { break };
            // Merge every non-overlapping occurrence of (a, b), left to right.
            let mut merged = Vec::with_capacity(syms.len());
            let mut j = 0;
            while j < syms.len() {
                if j + 1 < syms.len() && syms[j] == a && syms[j + 1] == b {
                    merged.push(format!("{a}{b}"));
                    j += 2;
                } else {
                    merged.push(std::mem::take(&mut syms[j]));
                    j += 1;
                }
            }
            syms = merged;
            if syms.len() == 1 {
                break;
            }
        }
        syms
    }
}

/// The merges of a `merges.txt` in rank order: a first line containing `#version` is skipped, blank lines are
/// ignored, at most [`MAX_MERGES`] are kept.
fn parse_merges(merges_txt: &str) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in merges_txt.lines().enumerate() {
        if (i == 0 && line.contains("#version")) || line.trim().is_empty() {
            continue;
        }
        if merges.len() == MAX_MERGES {
            break;
        }
        let (a, b) = line
            .split_once(' ')
            .ok_or_else(|| Error::config(format!("merges.txt line {}: expected two symbols, got `{line}`", i + 1)))?;
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

fn is_printable_byte(b: u8) -> bool {
    (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174
}

/// Byte length of the longest prefix of `s` whose characters satisfy `pred`.
fn run_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices().find(|&(_, c)| !pred(c)).map(|(i, _)| i).unwrap_or(s.len())
}

/// GPT-2's reversible byte → printable-character table: the printable Latin-1 bytes `!`..`~`, `¡`..`¬`, `®`..`ÿ`
/// map to themselves; the other 68 bytes map, in order, to U+0100, U+0101, ...
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let cp = if is_printable_byte(b as u8) {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        table[b as usize] = char::from_u32(cp).unwrap_or('\0');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written vocabulary: single bytes with and without `</w>` for a few letters, some merges, specials.
    fn tiny() -> ClipTokenizer {
        let merges = "#version: 0.2\nh e\nl l\nhe ll\nl o</w>\nhell o</w>\nc a\nca t</w>\n' s</w>\n! !</w>\n";
        let mut vocab: Vec<String> = Vec::new();
        for c in ['h', 'e', 'l', 'o', 'c', 'a', 't', 's', 'w', 'r', 'd', '\'', '!', '1', '2', '?', 'é'] {
            vocab.push(c.to_string());
            vocab.push(format!("{c}</w>"));
        }
        // é is two UTF-8 bytes: its byte-level symbols.
        let bc = bytes_to_unicode();
        let e_acute: Vec<char> = "é".bytes().map(|b| bc[b as usize]).collect();
        vocab.push(e_acute[0].to_string());
        vocab.push(format!("{}</w>", e_acute[1]));
        for m in ["he", "ll", "hell", "hello</w>", "lo</w>", "ca", "cat</w>", "'s</w>"] {
            vocab.push(m.to_string());
        }
        vocab.push("!!</w>".into());
        vocab.push(START_OF_TEXT.into());
        vocab.push(END_OF_TEXT.into());
        let map: HashMap<String, u32> = vocab.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect();
        ClipTokenizer::from_strs(&serde_json::to_string(&map).unwrap(), merges).unwrap()
    }

    fn toks(t: &ClipTokenizer, s: &str) -> Vec<String> {
        let inv: HashMap<u32, String> = t.encoder.iter().map(|(k, v)| (*v, k.clone())).collect();
        t.encode(s).unwrap().iter().map(|i| inv[i].clone()).collect()
    }

    #[test]
    fn byte_table_is_a_bijection_onto_printables() {
        let t = bytes_to_unicode();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[b' ' as usize], 'Ġ'); // U+0120, as in GPT-2
        assert_eq!(t[0], 'Ā');
        assert!(t.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn pre_tokenisation_semantics() {
        let t = tiny();
        let words = |s: &str| -> Vec<String> {
            t.pre_tokenize(s)
                .into_iter()
                .map(|p| match p {
                    Piece::Word(w) => w.to_string(),
                    Piece::Special(i) => format!("#{i}"),
                })
                .collect()
        };
        assert_eq!(words("cat's 12 hello!!"), ["cat", "'s", "1", "2", "hello", "!!"]);
        assert_eq!(words("we're it'll i'd x'y"), ["we", "'re", "it", "'ll", "i", "'d", "x", "'", "y"]);
        assert_eq!(words("a!'s"), ["a", "!'", "s"]); // a punctuation run swallows the apostrophe, as the regex
        assert_eq!(words("café2x"), ["café", "2", "x"]);
        assert_eq!(words("hi<|endoftext|>yo"), ["hi", format!("#{}", t.eot).as_str(), "yo"]);
    }

    #[test]
    fn bpe_merges_by_rank() {
        let t = tiny();
        assert_eq!(toks(&t, "hello"), ["hello</w>"]);
        assert_eq!(toks(&t, "  HELLO\n\tCat's  "), ["hello</w>", "cat</w>", "'s</w>"]);
        // "hell" + "o" is not a word end: "hell" gets no `o</w>` merge; "lo" merges only at a word end.
        assert_eq!(toks(&t, "hellos"), ["hell", "o", "s</w>"]);
        assert_eq!(toks(&t, "lo"), ["lo</w>"]);
        assert_eq!(toks(&t, "cats"), ["ca", "t", "s</w>"]);
        assert_eq!(toks(&t, "12!!"), ["1</w>", "2</w>", "!!</w>"]);
        assert_eq!(toks(&t, "é").len(), 2); // two byte-level symbols
        let err = t.encode("zebra").unwrap_err().to_string();
        assert!(err.contains("not in vocab.json"), "{err}");
    }

    #[test]
    fn specials_truncation_and_padding() {
        let t = tiny().with_context_length(6).unwrap();
        let (sot, eot) = (t.sot_id(), t.eot_id());
        let hello = t.encode("hello").unwrap()[0];
        assert_eq!(t.encode_padded("hello").unwrap(), vec![sot, hello, eot, eot, eot, eot]);
        let t0 = t.clone().with_pad_id(0);
        assert_eq!(t0.encode_padded("hello").unwrap(), vec![sot, hello, eot, 0, 0, 0]);
        let long = t.encode_padded("hello hello hello hello hello hello").unwrap();
        assert_eq!(long, vec![sot, hello, hello, hello, hello, eot]);
        let b = t.batch(&["hello", "cat"], &Device::Cpu).unwrap();
        assert_eq!(b.dims(), &[2, 6]);
        assert!(ClipTokenizer::from_strs("{\"a\": 0}", "").unwrap_err().to_string().contains("<|startoftext|>"));
    }

    #[test]
    fn vocabulary_from_merges_matches_clip_ids() {
        // Known ids of the real CLIP vocabulary that depend only on the construction: "!" = 0, "a" = 64,
        // "a</w>" = 320, "!</w>" = 256, and the specials after 512 byte tokens and the merges.
        let t = ClipTokenizer::from_merges("\"bpe_simple_vocab_16e6.txt#version: 0.2\nh e\nhe llo</w>\n").unwrap();
        assert_eq!(t.encoder["!"], 0);
        assert_eq!(t.encoder["a"], 64);
        assert_eq!(t.encode("a !").unwrap(), vec![320, 256]);
        assert_eq!(t.encoder["he"], 512);
        assert_eq!((t.sot_id(), t.eot_id()), (514, 515));
        // Every byte sequence encodes: any text tokenises with a byte-level vocabulary.
        assert_eq!(t.encode("zebra 🦓 ünï").unwrap().len(), 5 + 4 + 5);
        let full = 49408 - 2 - 512;
        let merges: String = (0..full + 10).map(|i| format!("x{i} y\n")).collect();
        let big = ClipTokenizer::from_merges(&merges).unwrap();
        assert_eq!((big.sot_id(), big.eot_id()), (49406, 49407));
    }

    #[test]
    fn from_files_reads_the_hf_layout() {
        let dir = tempfile::tempdir().unwrap();
        let t = tiny();
        let vocab: HashMap<String, u32> = t.encoder.clone();
        std::fs::write(dir.path().join("vocab.json"), serde_json::to_string(&vocab).unwrap()).unwrap();
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nh e\nl l\nhe ll\nhell o</w>\n").unwrap();
        let f = ClipTokenizer::from_files(&dir.path().join("vocab.json"), &dir.path().join("merges.txt")).unwrap();
        assert_eq!(f.encode("hello").unwrap(), t.encode("hello").unwrap());
        let missing = ClipTokenizer::from_files(&dir.path().join("nope.json"), &dir.path().join("merges.txt"));
        assert!(missing.unwrap_err().to_string().contains("nope.json"));
    }
}

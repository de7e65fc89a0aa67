//! The BERT WordPiece tokenizer (Devlin et al. 2019, "BERT", §3; WordPiece of Wu et al. 2016), read from a local
//! `vocab.txt` (one token per line, id = line number), as the text side of ImageReward needs it (rewards.md §5:
//! `bert-base-uncased` + BLIP's `[DEC]`, `[ENC]`; `padding="max_length"`, `max_length=35`, truncation).
//!
//! Pipeline, with the semantics of HF `transformers`' slow `BertTokenizer` (which BLIP/ImageReward use):
//! 1. special tokens written literally in the text (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]` and added tokens
//!    such as `[DEC]`, `[ENC]`) are split off and map to their ids;
//! 2. basic tokenization of the rest: drop NUL, U+FFFD and control/format characters, map whitespace to a space,
//!    put spaces around CJK ideographs, split on whitespace; per word (uncased vocabularies) lower-case and strip
//!    accents (NFD, drop non-spacing marks), then split off every punctuation character (ASCII symbols 33–47,
//!    58–64, 91–96, 123–126 and Unicode categories P*) as its own word;
//! 3. WordPiece per word: greedy longest-match-first over the characters, continuation pieces prefixed `##`; a word
//!    that cannot be covered, or is longer than 100 characters, becomes `[UNK]`;
//! 4. `[CLS]` + pieces + `[SEP]`, truncated so the total is at most `max_length` (pieces are cut, the specials
//!    kept), padded with `[PAD]` to `max_length`; the attention mask is 1 on real tokens, 0 on padding.
//!
//! Unicode categories come from the `unicode_categories` tables and NFD from `unicode-normalization-alignments`
//! (both already in the dependency tree through candle's `tokenizers`); characters assigned after those tables
//! were built may be classified differently from Python's `unicodedata` (none in ordinary prompts).

use std::collections::HashMap;
use std::path::Path;

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::{Error, Result};

/// Words longer than this many characters become `[UNK]` (HF `max_input_chars_per_word`).
pub const MAX_CHARS_PER_WORD: usize = 100;

/// The special tokens every BERT vocabulary has.
pub const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Token ids and attention mask of one text, padded to a fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids: `[CLS]`, pieces, `[SEP]`, then `[PAD]`.
    pub ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub mask: Vec<u32>,
}

impl Encoding {
    /// Number of real (unpadded) tokens.
    pub fn len_unpadded(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }
}

/// A BERT WordPiece tokenizer over a fixed vocabulary.
#[derive(Clone, Debug)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, u32>,
    /// Special tokens matched literally in the text, longest first.
    specials: Vec<(String, u32)>,
    lowercase: bool,
    cls: u32,
    sep: u32,
    pad: u32,
    unk: u32,
}

impl WordPieceTokenizer {
    /// A tokenizer over `tokens` (id = position). `lowercase` selects the uncased pipeline (lower-case + strip
    /// accents), as `bert-base-uncased`. The vocabulary must contain the five [`BERT_SPECIALS`].
    pub fn new(tokens: Vec<String>, lowercase: bool) -> Result<Self> {
        let mut vocab = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.into_iter().enumerate() {
            // Later duplicates do not override the first id (HF keeps the last; vocab.txt files have none).
            vocab.entry(t).or_insert(i as u32);
        }
        let id = |t: &str| {
            vocab.get(t).copied().ok_or_else(|| {
                Error::config(format!("wordpiece: the vocabulary has no `{t}` token; use a BERT vocab.txt"))
            })
        };
        let (cls, sep, pad, unk) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?, id("[UNK]")?);
        id("[MASK]")?;
        let specials = BERT_SPECIALS.iter().map(|s| (s.to_string(), vocab[*s])).collect();
        let mut tok = Self { vocab, specials, lowercase, cls, sep, pad, unk };
        tok.sort_specials();
        Ok(tok)
    }

    /// Reads a `vocab.txt` (one token per line; trailing `\r` and spaces on a line are ignored, as HF).
    pub fn from_vocab_file(path: &Path, lowercase: bool) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the BERT vocabulary: {e}")))?;
        let tokens: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        Self::new(tokens, lowercase).map_err(|e| Error::file(path, e.to_string()))
    }

    /// Appends special tokens after the vocabulary (ids `len`, `len + 1`, …), as HF `add_special_tokens`; a token
    /// already in the vocabulary keeps its id. BLIP adds `[DEC]` (bos) then `[ENC]`, giving 30522 and 30523 on
    /// `bert-base-uncased`.
    pub fn with_added_specials(mut self, added: &[&str]) -> Self {
        for &t in added {
            let next = self.vocab_size() as u32;
            let id = *self.vocab.entry(t.to_string()).or_insert(next);
            if !self.specials.iter().any(|(s, _)| s == t) {
                self.specials.push((t.to_string(), id));
            }
        }
        self.sort_specials();
        self
    }

    fn sort_specials(&mut self) {
        self.specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Number of ids (vocabulary plus added tokens).
    pub fn vocab_size(&self) -> usize {
        self.vocab.values().map(|&v| v as usize + 1).max().unwrap_or(0)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The `[PAD]` id.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The word pieces of `text` (no `[CLS]`/`[SEP]`), as strings.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in self.split_specials(text) {
            match chunk {
                Chunk::Special(s) => out.push(s.to_string()),
                Chunk::Text(t) => {
                    for word in self.basic_tokenize(t) {
                        self.wordpiece(&word, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Ids of the word pieces of `text` (no `[CLS]`/`[SEP]`).
    pub fn piece_ids(&self, text: &str) -> Vec<u32> {
        self.tokenize(text).iter().map(|p| self.vocab.get(p).copied().unwrap_or(self.unk)).collect()
    }

    /// `[CLS]` + pieces + `[SEP]`, truncated to `max_length` and padded with `[PAD]` to `max_length`
    /// (HF `padding="max_length", truncation=True`). `max_length` must be at least 2.
    pub fn encode(&self, text: &str, max_length: usize) -> Result<Encoding> {
        if max_length < 2 {
            return Err(Error::config(format!("wordpiece: max_length {max_length} leaves no room for [CLS] [SEP]")));
        }
        let mut pieces = self.piece_ids(text);
        pieces.truncate(max_length - 2);
        let mut ids = Vec::with_capacity(max_length);
        ids.push(self.cls);
        ids.extend(pieces);
        ids.push(self.sep);
        let real = ids.len();
        ids.resize(max_length, self.pad);
        let mask = (0..max_length).map(|i| u32::from(i < real)).collect();
        Ok(Encoding { ids, mask })
    }

    fn split_specials<'a>(&'a self, text: &'a str) -> Vec<Chunk<'a>> {
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            let rest = &text[i..];
            if let Some((s, _)) = self.specials.iter().find(|(s, _)| rest.starts_with(s.as_str())) {
                if start < i {
                    out.push(Chunk::Text(&text[start..i]));
                }
                out.push(Chunk::Special(s.as_str()));
                i += s.len();
                start = i;
            } else {
                i += rest.chars().next().map_or(1, char::len_utf8);
            }
        }
        if start < text.len() {
            out.push(Chunk::Text(&text[start..]));
        }
        out
    }

    /// Basic tokenization (clean, CJK spacing, whitespace split, lower-case/strip accents, punctuation split).
    fn basic_tokenize(&self, text: &str) -> Vec<String> {
        let mut cleaned = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                cleaned.push(' ');
            } else if is_cjk(c) {
                cleaned.push(' ');
                cleaned.push(c);
                cleaned.push(' ');
            } else {
                cleaned.push(c);
            }
        }
        let mut words = Vec::new();
        for word in cleaned.split_whitespace() {
            let word: String = if self.lowercase {
                word.to_lowercase().as_str().nfd().map(|(c, _)| c).filter(|c| !c.is_mark_nonspacing()).collect()
            } else {
                word.nfc().map(|(c, _)| c).collect()
            };
            let mut current = String::new();
            for c in word.chars() {
                if is_punctuation(c) {
                    if !current.is_empty() {
                        words.push(std::mem::take(&mut current));
                    }
                    words.push(c.to_string());
                } else {
                    current.push(c);
                }
            }
            if !current.is_empty() {
                words.push(current);
            }
        }
        words
    }

    /// Greedy longest-match-first WordPiece of one word, appended to `out`.
    fn wordpiece(&self, word: &str, out: &mut Vec<String>) {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_CHARS_PER_WORD {
            out.push("[UNK]".into());
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < chars.len() {
            let mut found = None;
            for end in (start + 1..=chars.len()).rev() {
                let body: String = chars[start..end].iter().collect();
                let piece = if start > 0 { format!("##{body}") } else { body };
                if self.vocab.contains_key(&piece) {
                    found = Some((piece, end));
                    break;
                }
            }
            match found {
                Some((piece, end)) => {
                    pieces.push(piece);
                    start = end;
                }
                None => {
                    out.push("[UNK]".into());
                    return;
                }
            }
        }
        out.extend(pieces);
    }
}

enum Chunk<'a> {
    Special(&'a str),
    Text(&'a str),
}

/// Whitespace as BERT: space, tab, newline, carriage return, or Unicode category Zs.
fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || c.is_separator_space()
}

/// Control as BERT: categories Cc, Cf, Co (and Cn), except tab, newline and carriage return (whitespace).
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    c.is_other()
}

/// Punctuation as BERT: the ASCII non-alphanumeric symbols (so `$`, `+`, `^`, `` ` `` count) or category P*.
fn is_punctuation(c: char) -> bool {
    let cp = c as u32;
    (33..=47).contains(&cp)
        || (58..=64).contains(&cp)
        || (91..=96).contains(&cp)
        || (123..=126).contains(&cp)
        || c.is_punctuation()
}

/// CJK Unified Ideographs blocks (BERT's `_is_chinese_char`; not Hangul, Hiragana or Katakana).
fn is_cjk(c: char) -> bool {
    let cp = c as u32;
    (0x4E00..=0x9FFF).contains(&cp)
        || (0x3400..=0x4DBF).contains(&cp)
        || (0x20000..=0x2A6DF).contains(&cp)
        || (0x2A700..=0x2B73F).contains(&cp)
        || (0x2B740..=0x2B81F).contains(&cp)
        || (0x2B820..=0x2CEAF).contains(&cp)
        || (0xF900..=0xFAFF).contains(&cp)
        || (0x2F800..=0x2FA1F).contains(&cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small generated vocabulary in `bert-base-uncased`'s layout: [PAD] = 0, [unused*], [UNK] = 100,
    /// [CLS] = 101, [SEP] = 102, [MASK] = 103, then single characters and the words/pieces the tests need.
    fn vocab() -> Vec<String> {
        let mut v = vec!["[PAD]".to_string()];
        v.extend((1..100).map(|i| format!("[unused{i}]")));
        v.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from));
        v.extend("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".chars().map(|c| c.to_string()));
        v.extend(('a'..='z').map(|c| c.to_string()));
        v.extend(('a'..='z').map(|c| format!("##{c}")));
        v.extend(
            [
                "a", "painting", "of", "an", "ocean", "with", "clouds", "and", "birds", "day", "time", "low", "depth",
                "field", "effect", "un", "##aff", "##able", "cafe", "naive", "的", "猫", "photo", "##graph", "##s",
                "cat",
            ]
            .map(String::from),
        );
        v
    }

    fn tok() -> WordPieceTokenizer {
        WordPieceTokenizer::new(vocab(), true).unwrap().with_added_specials(&["[DEC]", "[ENC]"])
    }

    #[test]
    fn specials_and_added_tokens_have_bert_ids() {
        let t = tok();
        assert_eq!(
            (t.token_id("[PAD]"), t.token_id("[UNK]"), t.token_id("[CLS]"), t.token_id("[SEP]")),
            (Some(0), Some(100), Some(101), Some(102))
        );
        let n = vocab().len() as u32;
        assert_eq!((t.token_id("[DEC]"), t.token_id("[ENC]")), (Some(n), Some(n + 1)));
        assert_eq!(t.vocab_size(), n as usize + 2);
    }

    #[test]
    fn greedy_longest_match_first_with_continuations() {
        let t = tok();
        assert_eq!(t.tokenize("unaffable"), ["un", "##aff", "##able"]);
        assert_eq!(t.tokenize("Photographs"), ["photo", "##graph", "##s"]);
        // A word no piece sequence covers is one [UNK]; its neighbours are unaffected.
        assert_eq!(t.tokenize("cat Ωmega cat"), ["cat", "[UNK]", "cat"]);
        // Falls back to single characters when no longer piece matches.
        assert_eq!(t.tokenize("xyz"), ["x", "##y", "##z"]);
        let long = "a".repeat(MAX_CHARS_PER_WORD + 1);
        assert_eq!(t.tokenize(&long), ["[UNK]"]);
    }

    #[test]
    fn basic_tokenization_lowercases_strips_accents_splits_punctuation() {
        let t = tok();
        assert_eq!(t.tokenize("  Café,\tNAÏVE!!\n"), ["cafe", ",", "naive", "!", "!"]);
        // ASCII symbols count as punctuation; control and format characters vanish; CJK is split per character.
        assert_eq!(t.tokenize("a$b\u{200B}c\u{0007}"), ["a", "$", "b", "##c"]);
        assert_eq!(t.tokenize("的猫"), ["的", "猫"]);
        // Unicode punctuation (category P*) splits too: « » are Pi/Pf.
        assert_eq!(t.tokenize("«cat»"), ["[UNK]", "cat", "[UNK]"]);
        // Special tokens written in the text are kept whole.
        assert_eq!(t.tokenize("[ENC]cat [MASK]"), ["[ENC]", "cat", "[MASK]"]);
    }

    #[test]
    fn encode_pads_and_truncates_like_max_length_35() {
        let t = tok();
        let prompt = "a painting of an ocean with clouds and birds, day time, low depth field effect";
        let e = t.encode(prompt, 35).unwrap();
        let id = |s: &str| t.token_id(s).unwrap();
        let expect_pieces = [
            "a", "painting", "of", "an", "ocean", "with", "clouds", "and", "birds", ",", "day", "time", ",", "low",
            "depth", "field", "effect",
        ];
        let mut expect = vec![101];
        expect.extend(expect_pieces.iter().map(|s| id(s)));
        expect.push(102);
        assert_eq!(e.len_unpadded(), expect.len());
        assert_eq!(&e.ids[..expect.len()], &expect[..]);
        assert!(e.ids[expect.len()..].iter().all(|&i| i == 0));
        assert_eq!(e.ids.len(), 35);
        assert_eq!(e.mask.iter().sum::<u32>() as usize, expect.len());
        // Truncation keeps [CLS] … [SEP] and cuts the pieces.
        let e = t.encode(prompt, 5).unwrap();
        assert_eq!(e.ids, vec![101, id("a"), id("painting"), id("of"), 102]);
        assert_eq!(e.mask, vec![1; 5]);
        assert_eq!(t.encode("", 4).unwrap().ids, vec![101, 102, 0, 0]);
        assert!(t.encode("x", 1).is_err());
    }

    #[test]
    fn vocab_file_and_missing_specials() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.txt");
        std::fs::write(&p, vocab().join("\n") + "\n").unwrap();
        let t = WordPieceTokenizer::from_vocab_file(&p, true).unwrap();
        assert_eq!(t.token_id("[CLS]"), Some(101));
        std::fs::write(&p, "[PAD]\n[UNK]\nfoo\n").unwrap();
        let e = WordPieceTokenizer::from_vocab_file(&p, true).unwrap_err().to_string();
        assert!(e.contains("vocab.txt") && e.contains("[CLS]"), "{e}");
        let e = WordPieceTokenizer::from_vocab_file(&dir.path().join("none.txt"), true).unwrap_err().to_string();
        assert!(e.contains("none.txt"), "{e}");
    }

    /// Differential test against Hugging Face's Rust `tokenizers` (BertNormalizer + BertPreTokenizer + WordPiece,
    /// the fast `bert-base-uncased` pipeline) on a generated vocabulary and text chosen to exercise every rule:
    /// accents and combining marks, ASCII symbols, Unicode punctuation and symbols, CJK vs Hangul/Kana, control,
    /// format and space characters, case mappings, long words, unknown characters.
    #[test]
    fn agrees_with_the_hugging_face_fast_bert_pipeline() {
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::bert::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::Tokenizer;

        let mut v = vocab();
        let singles = "0123456789αβγδωабвгдежзи中国人日本한국어カタカナßæøéü½€£¥©®™°±×÷§¶¿¡…·—–“”‘’„«»℃ﬁ";
        for c in singles.chars() {
            v.push(c.to_string());
            v.push(format!("##{c}"));
        }
        v.extend(["##ing", "run", "##ning", "straße", "ok", "##ay", "3", "##.", "##14"].map(String::from));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, v.join("\n") + "\n").unwrap();
        let ours = WordPieceTokenizer::from_vocab_file(&path, true).unwrap();
        let wp = WordPiece::from_file(path.to_str().unwrap())
            .unk_token("[UNK]".into())
            .max_input_chars_per_word(MAX_CHARS_PER_WORD)
            .build()
            .unwrap();
        let mut hf = Tokenizer::new(wp);
        hf.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).unwrap();
        hf.with_pre_tokenizer(Some(BertPreTokenizer));
        let texts = [
            "A painting of an ocean with clouds and birds, day time, low depth field effect",
            "Café naïve résumé — “quoted” ‘single’ «guillemets» „low“",
            "e\u{0301}le\u{0300}ve cafe\u{0327} n\u{0303}",
            "price: $3.14 + 50% off! a^b `code` ~tilde~ |pipe| <tag>=x_y {brace} [bracket] #hash @at",
            "中国人 日本 한국어 カタカナ mixed中文text",
            "tab\there\nnew\r\nline\u{00A0}nbsp\u{2003}emspace\u{200B}zero\u{200D}joiner\u{00AD}soft",
            "ctrl\u{0001}\u{0007}\u{007F}\u{0085}chars \u{FFFD} \u{0000}nul",
            "İstanbul STRASSE Straße ÆØÅ ΣΟΦΙΑ ﬁne ½ 3×4÷2 ±1 ℃ 30° ©®™ €5 £3 ¥9",
            "¿Qué? ¡Sí! wait… a·b §2 ¶3 emoji 🎨🖌 and ☃ snowman",
            "running ok okay runs xylophone",
            &"a".repeat(101),
            "",
            "   ",
        ];
        for t in texts {
            let theirs: Vec<String> = hf.encode(t, false).unwrap().get_tokens().to_vec();
            assert_eq!(ours.tokenize(t), theirs, "text {t:?}");
        }
    }

    #[test]
    fn cased_pipeline_keeps_case_and_accents() {
        let mut v = vocab();
        v.extend(["Café", "Cat"].map(String::from));
        let t = WordPieceTokenizer::new(v, false).unwrap();
        assert_eq!(t.tokenize("Café Cat"), ["Café", "Cat"]);
    }
}

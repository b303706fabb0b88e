//! BERT's uncased WordPiece tokenizer, as `tokenizers`' BertNormalizer +
//! BertPreTokenizer + WordPiece configure it for all-MiniLM-L6-v2: clean the
//! text (drop control characters, whitespace to spaces), put spaces around
//! CJK ideographs, lowercase, strip accents (NFD, drop combining marks), split
//! on whitespace and punctuation, then greedy longest-match-first WordPiece
//! with `##` continuations (a word longer than 100 characters, or one the
//! vocabulary cannot spell, is `[UNK]`). Written here rather than taken from
//! the `tokenizers` crate, which does not build for wasm32-unknown-unknown
//! with its default features and brings a regex engine the plugin does not
//! need.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub const CLS: u32 = 101;
pub const SEP: u32 = 102;
pub const UNK: u32 = 100;
const MAX_WORD_CHARS: usize = 100;

/// A text as the encoder reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `[CLS] pieces… [SEP]`.
    pub ids: Vec<u32>,
    /// Words with a letter or digit in them (punctuation is not counted).
    pub words: usize,
    /// Of those, the ones the vocabulary cannot spell (`[UNK]`).
    pub unknown: usize,
    /// The text had more pieces than the encoder reads.
    pub truncated: bool,
}

#[derive(Debug)]
pub struct Tokenizer {
    vocab: HashMap<String, u32>,
}

impl Tokenizer {
    /// From the vocabulary, one token per line in id order.
    pub fn new(vocab: &str) -> Tokenizer {
        let vocab = vocab
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_owned(), i as u32))
            .collect();
        Tokenizer { vocab }
    }

    /// `[CLS] pieces… [SEP]`, at most `max_len` ids (pieces beyond are cut,
    /// as sentence-transformers truncates).
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        self.encode_counted(text, max_len).ids
    }

    /// [`Tokenizer::encode`], counting what was read.
    pub fn encode_counted(&self, text: &str, max_len: usize) -> Encoded {
        let mut words = 0;
        let mut unknown = 0;
        let mut truncated = false;
        let mut ids = vec![CLS];
        let budget = max_len.saturating_sub(1);
        let mut piece = String::new();
        'words: for word in pre_tokenize(&normalize(text)) {
            let chars: Vec<char> = word.chars().collect();
            let is_word = chars.iter().any(|c| c.is_alphanumeric());
            if chars.len() > MAX_WORD_CHARS {
                if ids.len() >= budget {
                    truncated = true;
                    break;
                }
                words += usize::from(is_word);
                unknown += usize::from(is_word);
                ids.push(UNK);
                continue;
            }
            let mut word_ids = Vec::new();
            let mut start = 0;
            while start < chars.len() {
                let mut end = chars.len();
                let mut found = None;
                while start < end {
                    piece.clear();
                    if start > 0 {
                        piece.push_str("##");
                    }
                    piece.extend(&chars[start..end]);
                    if let Some(&id) = self.vocab.get(piece.as_str()) {
                        found = Some(id);
                        break;
                    }
                    end -= 1;
                }
                match found {
                    Some(id) => {
                        word_ids.push(id);
                        start = end;
                    }
                    None => {
                        word_ids.clear();
                        word_ids.push(UNK);
                        break;
                    }
                }
            }
            if is_word {
                words += 1;
                unknown += usize::from(word_ids == [UNK]);
            }
            for id in word_ids {
                if ids.len() >= budget {
                    truncated = true;
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(SEP);
        Encoded {
            ids,
            words,
            unknown,
            truncated,
        }
    }
}

/// Clean, space out CJK, lowercase and strip accents.
fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
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
    cleaned
        .to_lowercase()
        .nfd()
        .filter(|&c| !is_combining_mark(c))
        .collect()
}

/// Words split on whitespace, each punctuation character a word of its own.
fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for w in text.split(is_whitespace) {
        let mut start = 0;
        for (i, c) in w.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    words.push(&w[start..i]);
                }
                words.push(&w[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < w.len() {
            words.push(&w[start..]);
        }
    }
    words
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Control and format characters (Unicode Cc, Cf), except the whitespace ones.
fn is_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    c.is_control()
        || matches!(c, '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}'
            | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// BERT's punctuation: every non-alphanumeric ASCII character, and Unicode
/// punctuation (category P*) in the blocks where it occurs in practice.
fn is_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    matches!(c,
        '\u{a1}' | '\u{a7}' | '\u{ab}' | '\u{b6}' | '\u{b7}' | '\u{bb}' | '\u{bf}'
        | '\u{37e}' | '\u{387}' | '\u{55a}'..='\u{55f}' | '\u{589}' | '\u{58a}'
        | '\u{5be}' | '\u{5c0}' | '\u{5c3}' | '\u{5c6}' | '\u{5f3}' | '\u{5f4}'
        | '\u{609}' | '\u{60a}' | '\u{60c}' | '\u{60d}' | '\u{61b}' | '\u{61e}' | '\u{61f}'
        | '\u{66a}'..='\u{66d}' | '\u{6d4}' | '\u{964}' | '\u{965}' | '\u{970}'
        | '\u{e4f}' | '\u{e5a}' | '\u{e5b}'
        | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{2043}' | '\u{2045}'..='\u{2051}'
        | '\u{2053}'..='\u{205e}' | '\u{207d}' | '\u{207e}' | '\u{208d}' | '\u{208e}'
        | '\u{2308}'..='\u{230b}' | '\u{2329}' | '\u{232a}' | '\u{2768}'..='\u{2775}'
        | '\u{27c5}' | '\u{27c6}' | '\u{27e6}'..='\u{27ef}' | '\u{2983}'..='\u{2998}'
        | '\u{29d8}'..='\u{29db}' | '\u{29fc}' | '\u{29fd}' | '\u{2cf9}'..='\u{2cfc}'
        | '\u{2cfe}' | '\u{2cff}' | '\u{2e00}'..='\u{2e2e}' | '\u{2e30}'..='\u{2e4f}'
        | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301f}'
        | '\u{3030}' | '\u{303d}' | '\u{30a0}' | '\u{30fb}'
        | '\u{fe10}'..='\u{fe19}' | '\u{fe30}'..='\u{fe52}' | '\u{fe54}'..='\u{fe61}'
        | '\u{fe63}' | '\u{fe68}' | '\u{fe6a}' | '\u{fe6b}'
        | '\u{ff01}'..='\u{ff03}' | '\u{ff05}'..='\u{ff0a}' | '\u{ff0c}'..='\u{ff0f}'
        | '\u{ff1a}' | '\u{ff1b}' | '\u{ff1f}' | '\u{ff20}' | '\u{ff3b}'..='\u{ff3d}'
        | '\u{ff3f}' | '\u{ff5b}' | '\u{ff5d}' | '\u{ff5f}'..='\u{ff65}')
}

/// The CJK ideograph blocks BERT spaces out.
fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{20000}'..='\u{2a6df}'
        | '\u{2a700}'..='\u{2b73f}' | '\u{2b740}'..='\u{2b81f}' | '\u{2b820}'..='\u{2ceaf}'
        | '\u{f900}'..='\u{faff}' | '\u{2f800}'..='\u{2fa1f}')
}

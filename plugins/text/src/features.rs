//! From message text to the model's inputs: a few dense features from VADER
//! and the message's shape, and the stems of its words for the word table.
//!
//! The same code runs in the plugin, in `examples/fit.rs` (which fits the
//! weights on EmoBank's train split) and in `examples/quality.rs`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;

use rust_stemmers::{Algorithm, Stemmer};

use crate::emoji;
use crate::fxhash::FxBuildHasher;
use crate::vader::{self, Mode};

/// Names of the dense features, in order; the model file lists them by name.
pub const DENSE_NAMES: [&str; DENSE] = [
    "compound",
    "pos",
    "neg",
    "pos_sum_sqrt",
    "neg_sum_sqrt",
    "hit_ratio",
    "max_abs",
    "abs_sum_sqrt",
    "emphasis",
    "questions",
    "log_tokens",
];

/// How many dense features there are.
pub const DENSE: usize = 11;

/// Everything the model and the confidence need from one message.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// See [`DENSE_NAMES`].
    pub dense: [f64; DENSE],
    /// Stems of the message's words, in order (repeats kept).
    pub stems: Vec<Rc<str>>,
    /// Whether the VADER lexicon knows each word, parallel to `stems`.
    pub in_lexicon: Vec<bool>,
    /// VADER's compound score (also `dense[0]`).
    pub compound: f64,
    /// VADER tokens (whitespace separated).
    pub tokens: usize,
    /// VADER tokens without a letter or digit that the lexicon knows
    /// (emoticons such as `:)` or `<3`).
    pub emoticons: usize,
    /// Emoji replaced by their glosses.
    pub emoji: usize,
    /// Alphabetic characters, and how many of them are Latin script.
    pub letters: usize,
    pub latin_letters: usize,
}

/// Replace emoji by their glosses (with spaces around), curly quotes by
/// straight ones, and drop soft hyphens and emoji modifiers.
pub fn prepare(text: &str) -> (Cow<'_, str>, usize) {
    let needs_work = text.chars().any(|c| {
        !c.is_ascii() && (special_char(c) || emoji::gloss(c).is_some() || emoji::is_modifier(c))
    });
    if !needs_work {
        return (Cow::Borrowed(text), 0);
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut count = 0;
    for c in text.chars() {
        if let Some(g) = emoji::gloss(c) {
            count += 1;
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            out.push_str(g);
            out.push(' ');
        } else if emoji::is_modifier(c) || c == '\u{00AD}' {
        } else {
            out.push(match c {
                '\u{2018}' | '\u{2019}' | '\u{02BC}' => '\'',
                '\u{201C}' | '\u{201D}' => '"',
                other => other,
            });
        }
    }
    (Cow::Owned(out), count)
}

fn special_char(c: char) -> bool {
    matches!(
        c,
        '\u{2018}' | '\u{2019}' | '\u{02BC}' | '\u{201C}' | '\u{201D}' | '\u{00AD}'
    )
}

fn stemmer() -> &'static Stemmer {
    static STEMMER: OnceLock<Stemmer> = OnceLock::new();
    STEMMER.get_or_init(|| Stemmer::create(Algorithm::English))
}

/// Load the lexicon and the stemmer now rather than on the first message.
pub fn warm_up() {
    vader::warm_up();
    let _ = stemmer();
}

/// The word-table form of one word: lower case, apostrophes trimmed,
/// possessive `'s` dropped, runs of three or more equal letters cut to two.
pub fn word_form(raw: &str) -> Option<String> {
    let lower = raw.to_lowercase();
    let mut w = lower.trim_matches('\'');
    if let Some(stripped) = w.strip_suffix("'s") {
        w = stripped;
    }
    if w.is_empty() {
        return None;
    }
    if vader::has_elongation(w) {
        let mut out = String::with_capacity(w.len());
        let mut prev = None;
        let mut run = 0;
        for c in w.chars() {
            if Some(c) == prev {
                run += 1;
            } else {
                prev = Some(c);
                run = 1;
            }
            if run <= 2 || !c.is_alphabetic() {
                out.push(c);
            }
        }
        return Some(out);
    }
    Some(w.to_string())
}

/// Porter2 (Snowball English) stem of a word form.
pub fn stem(word: &str) -> String {
    stemmer().stem(word).into_owned()
}

/// What the word table needs of one written word.
#[derive(Debug, Clone)]
struct WordInfo {
    stem: Rc<str>,
    in_lexicon: bool,
}

/// Written words seen recently → their stem: stemming is the costliest step
/// per word, and messages share most of their words. Bounded: cleared when
/// full. Per thread (the component has one).
const CACHE_LIMIT: usize = 20_000;

thread_local! {
    static WORD_CACHE: RefCell<HashMap<Box<str>, Option<WordInfo>, FxBuildHasher>> =
        const { RefCell::new(HashMap::with_hasher(FxBuildHasher)) };
}

fn word_info(raw: &str) -> Option<WordInfo> {
    WORD_CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(raw) {
            return hit.clone();
        }
        let info = word_form(raw).map(|form| WordInfo {
            stem: stem(&form).into(),
            in_lexicon: vader::lexicon_valence(&form).is_some(),
        });
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(raw.into(), info.clone());
        info
    })
}

/// The words of a text for the word table: maximal runs of letters, digits
/// and apostrophes.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| w.chars().any(char::is_alphanumeric))
}

/// Compute the features of a message.
pub fn extract(text: &str) -> Features {
    let (prepared, emoji) = prepare(text);
    let text = prepared.as_ref();
    let scores = vader::score(text, Mode::Extended);

    let n = scores.tokens.max(1) as f64;
    let sqrt_n = n.sqrt();
    let (mut pos_sum, mut neg_sum, mut abs_sum, mut max_abs, mut hits) = (0.0, 0.0, 0.0, 0.0f64, 0);
    for &s in &scores.sentiments {
        if s > 0.0 {
            pos_sum += s;
        } else if s < 0.0 {
            neg_sum += s;
        }
        if s != 0.0 {
            hits += 1;
            abs_sum += s.abs();
            max_abs = max_abs.max(s.abs());
        }
    }
    let (exclamations, questions) = vader::marks(text);
    let (exclamations, questions) = (exclamations.min(3), questions.min(3));
    let emphatic_words = scores.caps_emphasis + scores.elongations;

    let dense = [
        scores.compound,
        scores.pos,
        scores.neg,
        pos_sum / sqrt_n,
        neg_sum / sqrt_n,
        hits as f64 / n,
        max_abs,
        abs_sum / sqrt_n,
        (exclamations + emphatic_words).min(3) as f64,
        questions as f64,
        n.ln(),
    ];

    let mut stems = Vec::with_capacity(scores.tokens + 4);
    let mut in_lexicon = Vec::with_capacity(scores.tokens + 4);
    for w in words(text) {
        if let Some(info) = word_info(w) {
            stems.push(info.stem);
            in_lexicon.push(info.in_lexicon);
        }
    }
    let emoticons = scores.emoticons;
    let (mut letters, mut latin_letters) = (0, 0);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        // Basic Latin, Latin-1, Latin Extended-A/B and Additional.
        if c.is_ascii()
            || ('\u{00C0}'..='\u{024F}').contains(&c)
            || ('\u{1E00}'..='\u{1EFF}').contains(&c)
        {
            latin_letters += 1;
        }
    }
    Features {
        dense,
        stems,
        in_lexicon,
        compound: scores.compound,
        tokens: scores.tokens,
        emoticons,
        emoji,
        letters,
        latin_letters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_forms() {
        assert_eq!(word_form("Mary's").as_deref(), Some("mary"));
        assert_eq!(word_form("'quoted'").as_deref(), Some("quoted"));
        assert_eq!(word_form("Goooood").as_deref(), Some("good"));
        assert_eq!(word_form("'"), None);
        assert_eq!(stem("running"), "run");
    }

    #[test]
    fn emoji_become_words() {
        let (p, n) = prepare("great\u{1F602}\u{1F3FD}!");
        assert_eq!(n, 1);
        assert_eq!(p, "great face with tears of joy !");
        let (p, n) = prepare("don\u{2019}t");
        assert_eq!((p.as_ref(), n), ("don't", 0));
    }

    #[test]
    fn words_split_on_punctuation() {
        let w: Vec<_> = words("Hello, world! It's 5pm... ok?").collect();
        assert_eq!(w, ["Hello", "world", "It's", "5pm", "ok"]);
    }
}

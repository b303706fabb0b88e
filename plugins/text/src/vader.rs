//! VADER, ported from vaderSentiment 3.3.2 (Hutto & Gilbert 2014, MIT licence).
//!
//! In [`Mode::Reference`] this is bug-compatible with the Python package's
//! `SentimentIntensityAnalyzer.polarity_scores` on text without emoji (the
//! quality example checks it reproduces VADER's compound correlation on
//! EmoBank), including its quirks (the `but` rule rescales the *first*
//! sentiment equal to each value; `NO` in capitals before a lexicon word
//! scores −0.733). [`Mode::Extended`] is what the plugin runs: the same rules
//! plus elongated words ("sooo goood" reads as an emphasised "so good"),
//! curly apostrophes, soft hyphens and emoji glosses (see `emoji.rs`).
//!
//! Constants, word lists and rules are VADER's; the lexicon is the file
//! `data/vader_lexicon.txt` (MIT, see `data/VADER-LICENSE.txt`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::fxhash::FxBuildHasher;

/// Empirically derived mean increase for booster words (VADER).
const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
/// Increase for an ALL-CAPS sentiment word among mixed-case words (VADER).
const C_INCR: f64 = 0.733;
/// Negation scalar (VADER).
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

/// Degree adverbs: intensifiers (+) and dampeners (−), VADER's list.
const BOOSTERS: &[(&str, f64)] = &[
    ("absolutely", B_INCR),
    ("amazingly", B_INCR),
    ("awfully", B_INCR),
    ("completely", B_INCR),
    ("considerable", B_INCR),
    ("considerably", B_INCR),
    ("decidedly", B_INCR),
    ("deeply", B_INCR),
    ("effing", B_INCR),
    ("enormous", B_INCR),
    ("enormously", B_INCR),
    ("entirely", B_INCR),
    ("especially", B_INCR),
    ("exceptional", B_INCR),
    ("exceptionally", B_INCR),
    ("extreme", B_INCR),
    ("extremely", B_INCR),
    ("fabulously", B_INCR),
    ("flipping", B_INCR),
    ("flippin", B_INCR),
    ("frackin", B_INCR),
    ("fracking", B_INCR),
    ("fricking", B_INCR),
    ("frickin", B_INCR),
    ("frigging", B_INCR),
    ("friggin", B_INCR),
    ("fully", B_INCR),
    ("fuckin", B_INCR),
    ("fucking", B_INCR),
    ("fuggin", B_INCR),
    ("fugging", B_INCR),
    ("greatly", B_INCR),
    ("hella", B_INCR),
    ("highly", B_INCR),
    ("hugely", B_INCR),
    ("incredible", B_INCR),
    ("incredibly", B_INCR),
    ("intensely", B_INCR),
    ("major", B_INCR),
    ("majorly", B_INCR),
    ("more", B_INCR),
    ("most", B_INCR),
    ("particularly", B_INCR),
    ("purely", B_INCR),
    ("quite", B_INCR),
    ("really", B_INCR),
    ("remarkably", B_INCR),
    ("so", B_INCR),
    ("substantially", B_INCR),
    ("thoroughly", B_INCR),
    ("total", B_INCR),
    ("totally", B_INCR),
    ("tremendous", B_INCR),
    ("tremendously", B_INCR),
    ("uber", B_INCR),
    ("unbelievably", B_INCR),
    ("unusually", B_INCR),
    ("utter", B_INCR),
    ("utterly", B_INCR),
    ("very", B_INCR),
    ("almost", B_DECR),
    ("barely", B_DECR),
    ("hardly", B_DECR),
    ("just enough", B_DECR),
    ("kind of", B_DECR),
    ("kinda", B_DECR),
    ("kindof", B_DECR),
    ("kind-of", B_DECR),
    ("less", B_DECR),
    ("little", B_DECR),
    ("marginal", B_DECR),
    ("marginally", B_DECR),
    ("occasional", B_DECR),
    ("occasionally", B_DECR),
    ("partly", B_DECR),
    ("scarce", B_DECR),
    ("scarcely", B_DECR),
    ("slight", B_DECR),
    ("slightly", B_DECR),
    ("somewhat", B_DECR),
    ("sort of", B_DECR),
    ("sorta", B_DECR),
    ("sortof", B_DECR),
    ("sort-of", B_DECR),
];

/// Idioms and phrases that contain lexicon words (VADER's `SPECIAL_CASES`),
/// as word sequences.
const SPECIAL_CASES: &[(&[&str], f64)] = &[
    (&["the", "shit"], 3.0),
    (&["the", "bomb"], 3.0),
    (&["bad", "ass"], 1.5),
    (&["badass"], 1.5),
    (&["bus", "stop"], 0.0),
    (&["yeah", "right"], -2.0),
    (&["kiss", "of", "death"], -1.5),
    (&["to", "die", "for"], 3.0),
    (&["beating", "heart"], 3.5),
];

/// The embedded VADER lexicon: token → mean valence on −4..+4.
static LEXICON_TEXT: &str = include_str!("../data/vader_lexicon.txt");

type Map<V> = HashMap<Box<str>, V, FxBuildHasher>;

/// What VADER's word lists say about one lower-case token. One table rather
/// than three (lexicon, boosters, negations): a token is looked up once, and
/// a hash lookup is about three times its native cost in WebAssembly.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    lex: Option<f64>,
    booster: Option<f64>,
    negation: bool,
    /// The first word of an idiom or a multi-word booster: only then are
    /// the phrase lists searched (string comparisons, calls to `memcmp` in
    /// WebAssembly, for every sentiment word's neighbours otherwise).
    phrase_start: bool,
}

struct Tables {
    words: Map<Entry>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut words: Map<Entry> = Map::with_capacity_and_hasher(7700, FxBuildHasher);
        for line in LEXICON_TEXT.lines() {
            let mut fields = line.split('\t');
            let (Some(word), Some(value)) = (fields.next(), fields.next()) else {
                continue;
            };
            if let Ok(v) = value.trim().parse::<f64>() {
                words.entry(word.trim().into()).or_default().lex = Some(v);
            }
        }
        for &(w, v) in BOOSTERS {
            words.entry(w.into()).or_default().booster = Some(v);
        }
        for &w in NEGATE {
            words.entry(w.into()).or_default().negation = true;
        }
        let phrases = SPECIAL_CASES.iter().map(|(p, _)| p[0]);
        let boosters = BOOSTERS
            .iter()
            .filter_map(|(p, _)| p.split_once(' ').map(|(a, _)| a));
        for first in phrases.chain(boosters) {
            words.entry(first.into()).or_default().phrase_start = true;
        }
        Tables { words }
    })
}

impl Tables {
    fn get(&self, lower: &str) -> Entry {
        self.words.get(lower).copied().unwrap_or_default()
    }
}

/// Force the tables to load (so the first reading does not pay for it).
pub fn warm_up() {
    let _ = tables();
}

/// The VADER lexicon's valence for a lower-case token, if it has one.
pub fn lexicon_valence(lower: &str) -> Option<f64> {
    tables().get(lower).lex
}

/// Whether a lower-case token is one of VADER's degree adverbs.
pub fn is_booster(lower: &str) -> bool {
    tables().get(lower).booster.is_some()
}

/// Which rules to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// vaderSentiment 3.3.2 as published (without its emoji file).
    Reference,
    /// VADER plus elongation handling (the plugin's mode).
    Extended,
}

/// One token of VADER's tokenization, with what the rules ask about it
/// looked up once.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    /// As written (punctuation stripped from word edges, VADER-style).
    pub text: &'a str,
    /// Lower case, elongation collapsed where that finds a lexicon word.
    pub lower: Cow<'a, str>,
    /// Python's `str.isupper()` of the written form.
    pub is_upper: bool,
    /// Written elongated ("goooood") and found in the lexicon once collapsed.
    pub elongated: bool,
    /// Written without a letter or digit and in the lexicon as written (`:)`).
    pub emoticon: bool,
    /// `lower` begins an idiom or a multi-word booster.
    pub phrase_start: bool,
    /// The lexicon's valence of `lower`.
    pub lex: Option<f64>,
    /// The booster value of `lower`.
    pub booster: Option<f64>,
    /// `lower` negates (VADER's `negated([word])`).
    pub negation: bool,
}

/// VADER's scores for a text, plus the per-token sentiments the plugin's
/// features are built from.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub compound: f64,
    pub pos: f64,
    pub neg: f64,
    pub neu: f64,
    /// One value per token (0 for tokens without sentiment), after the rules.
    pub sentiments: Vec<f64>,
    /// VADER's punctuation amplifier (exclamation and question marks).
    pub punctuation: f64,
    /// ALL-CAPS tokens (two letters or more) that carry sentiment or boost it,
    /// whether or not the whole message is in capitals.
    pub caps_emphasis: usize,
    /// Elongated tokens that resolve to a lexicon word or booster.
    pub elongations: usize,
    /// Emoticons ([`Token::emoticon`]).
    pub emoticons: usize,
    pub tokens: usize,
}

/// Python's `str.isupper()`: at least one cased character, none lower case.
pub fn py_isupper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() {
            return false;
        }
        if c.is_uppercase() {
            cased = true;
        }
    }
    cased
}

/// `token.strip(string.punctuation)`: ASCII punctuation off both ends.
fn strip_ascii_punct(token: &str) -> &str {
    token.trim_matches(|c: char| c.is_ascii_punctuation())
}

/// VADER's `_strip_punc_if_word`: strip edge punctuation unless that leaves
/// two characters or fewer (then the token was probably an emoticon).
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = strip_ascii_punct(token);
    // At most two characters (without counting all of a long word's).
    if stripped.chars().nth(2).is_none() {
        token
    } else {
        stripped
    }
}

/// Collapse runs of three or more equal letters to `keep` letters.
fn collapse_runs(word: &str, keep: usize) -> String {
    let mut out = String::with_capacity(word.len());
    let mut prev: Option<char> = None;
    let mut run = 0;
    for c in word.chars() {
        if Some(c) == prev {
            run += 1;
        } else {
            prev = Some(c);
            run = 1;
        }
        if run <= keep {
            out.push(c);
        }
    }
    out
}

/// Whether a word has a run of three or more equal letters ("sooo").
pub fn has_elongation(word: &str) -> bool {
    let mut prev: Option<char> = None;
    let mut run = 0;
    for c in word.chars() {
        if Some(c) == prev && c.is_alphabetic() {
            run += 1;
            if run >= 3 {
                return true;
            }
        } else {
            prev = Some(c);
            run = 1;
        }
    }
    false
}

/// Lower-case a token, borrowing when it already is.
fn lower_case(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_uppercase) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Split a text into VADER tokens.
pub fn tokenize(text: &str, mode: Mode) -> Vec<Token<'_>> {
    let t = tables();
    text.split_whitespace()
        .map(|raw| {
            let written = strip_punc_if_word(raw);
            let mut lower = lower_case(written);
            let mut entry = t.get(&lower);
            // Without a letter or digit, lower-casing changed nothing (every
            // cased character is alphabetic): the lookup above was of the
            // written form, which is the raw token unless stripping cut it.
            let emoticon = !raw.chars().any(char::is_alphanumeric)
                && if written.len() == raw.len() {
                    entry.lex.is_some()
                } else {
                    t.get(raw).lex.is_some()
                };
            let mut elongated = false;
            if mode == Mode::Extended
                && entry.lex.is_none()
                && entry.booster.is_none()
                && has_elongation(&lower)
            {
                for keep in [2, 1] {
                    let c = collapse_runs(&lower, keep);
                    let found = t.get(&c);
                    if found.lex.is_some() || found.booster.is_some() {
                        (entry, elongated) = (found, true);
                        lower = Cow::Owned(c);
                        break;
                    }
                }
            }
            let negation = entry.negation || has_nt(&lower);
            Token {
                text: written,
                is_upper: py_isupper(written),
                lower,
                elongated,
                emoticon,
                phrase_start: entry.phrase_start,
                lex: entry.lex,
                booster: entry.booster,
                negation,
            }
        })
        .collect()
}

/// Whether a word holds "n't" (VADER's `negated([word])` beyond its list).
/// A byte scan: `str::contains(&str)` builds a two-way searcher per call,
/// a tenth of a microsecond per token in WebAssembly.
fn has_nt(lower: &str) -> bool {
    lower.as_bytes().windows(3).any(|w| w == b"n't")
}

/// VADER's `scalar_inc_dec`: the boost a preceding word gives.
fn scalar_inc_dec(tok: &Token<'_>, valence: f64, is_cap_diff: bool) -> f64 {
    let Some(b) = tok.booster else {
        return 0.0;
    };
    let mut scalar = if valence < 0.0 { -b } else { b };
    if (tok.is_upper && is_cap_diff) || tok.elongated {
        if valence > 0.0 {
            scalar += C_INCR;
        } else {
            scalar -= C_INCR;
        }
    }
    scalar
}

/// The value of a special-case phrase spelled by `words`.
fn special(words: &[&Token<'_>]) -> Option<f64> {
    if !words.first().is_some_and(|w| w.phrase_start) {
        return None;
    }
    SPECIAL_CASES
        .iter()
        .find(|(phrase, _)| {
            phrase.len() == words.len() && phrase.iter().zip(words).all(|(p, w)| *p == w.lower)
        })
        .map(|&(_, v)| v)
}

/// Multi-word boosters ("kind of", "sort of", "just enough").
fn multiword_booster(words: &[&Token<'_>]) -> Option<f64> {
    match words {
        // `a b` compared in place: `split_once(' ')` per booster searched
        // with memchr, a slow loop in WebAssembly, for every word pair.
        [a, b] if a.phrase_start => BOOSTERS
            .iter()
            .find(|(phrase, _)| {
                phrase.len() == a.lower.len() + 1 + b.lower.len()
                    && phrase.starts_with(&*a.lower)
                    && phrase.as_bytes()[a.lower.len()] == b' '
                    && phrase.ends_with(&*b.lower)
            })
            .map(|&(_, v)| v),
        _ => None,
    }
}

fn negation_check(mut valence: f64, w: &[Token<'_>], start_i: usize, i: usize) -> f64 {
    let is = |k: usize, word: &str| w[k].lower == word;
    match start_i {
        0 => {
            if w[i - 1].negation {
                valence *= N_SCALAR;
            }
        }
        1 => {
            if is(i - 2, "never") && (is(i - 1, "so") || is(i - 1, "this")) {
                valence *= 1.25;
            } else if is(i - 2, "without") && is(i - 1, "doubt") {
            } else if w[i - 2].negation {
                valence *= N_SCALAR;
            }
        }
        _ => {
            // Python's precedence: (never and (so or this)) or (so or this).
            if (is(i - 3, "never") && (is(i - 2, "so") || is(i - 2, "this")))
                || (is(i - 1, "so") || is(i - 1, "this"))
            {
                valence *= 1.25;
            } else if is(i - 3, "without") && (is(i - 2, "doubt") || is(i - 1, "doubt")) {
            } else if w[i - 3].negation {
                valence *= N_SCALAR;
            }
        }
    }
    valence
}

fn special_idioms_check(mut valence: f64, w: &[Token<'_>], i: usize) -> f64 {
    let (t3, t2, t1, t0) = (&w[i - 3], &w[i - 2], &w[i - 1], &w[i]);
    // onezero, twoonezero, twoone, threetwoone, threetwo: the first that matches.
    let sequences: [&[&Token<'_>]; 5] = [
        &[t1, t0],
        &[t2, t1, t0],
        &[t2, t1],
        &[t3, t2, t1],
        &[t3, t2],
    ];
    if let Some(v) = sequences.iter().find_map(|seq| special(seq)) {
        valence = v;
    }
    if w.len() - 1 > i
        && let Some(v) = special(&[t0, &w[i + 1]])
    {
        valence = v;
    }
    if w.len() - 1 > i + 1
        && let Some(v) = special(&[t0, &w[i + 1], &w[i + 2]])
    {
        valence = v;
    }
    // Booster n-grams threetwoone, threetwo, twoone: only two-word boosters exist.
    for ngram in [&[t3, t2][..], &[t2, t1][..]] {
        if let Some(b) = multiword_booster(ngram) {
            valence += b;
        }
    }
    valence
}

fn least_check(mut valence: f64, w: &[Token<'_>], i: usize) -> f64 {
    if i > 1 && w[i - 1].lex.is_none() && w[i - 1].lower == "least" {
        if w[i - 2].lower != "at" && w[i - 2].lower != "very" {
            valence *= N_SCALAR;
        }
    } else if i > 0 && w[i - 1].lex.is_none() && w[i - 1].lower == "least" {
        valence *= N_SCALAR;
    }
    valence
}

fn sentiment_valence(w: &[Token<'_>], i: usize, is_cap_diff: bool) -> f64 {
    let item = &w[i];
    let Some(base) = item.lex else {
        return 0.0;
    };
    let is = |k: usize, word: &str| w[k].lower == word;
    let mut valence = base;
    if is(i, "no") && i != w.len() - 1 && w[i + 1].lex.is_some() {
        valence = 0.0;
    }
    if (i > 0 && is(i - 1, "no"))
        || (i > 1 && is(i - 2, "no"))
        || (i > 2 && is(i - 3, "no") && (is(i - 1, "or") || is(i - 1, "nor")))
    {
        valence = base * N_SCALAR;
    }
    if (item.is_upper && is_cap_diff) || item.elongated {
        if valence > 0.0 {
            valence += C_INCR;
        } else {
            valence -= C_INCR;
        }
    }
    for start_i in 0..3 {
        if i > start_i && w[i - (start_i + 1)].lex.is_none() {
            let mut s = scalar_inc_dec(&w[i - (start_i + 1)], valence, is_cap_diff);
            if start_i == 1 && s != 0.0 {
                s *= 0.95;
            }
            if start_i == 2 && s != 0.0 {
                s *= 0.9;
            }
            valence += s;
            valence = negation_check(valence, w, start_i, i);
            if start_i == 2 {
                valence = special_idioms_check(valence, w, i);
            }
        }
    }
    least_check(valence, w, i)
}

/// VADER's `_but_check`, quirk included: for each value in turn, the *first*
/// sentiment equal to it is halved (before `but`) or scaled by 1.5 (after).
fn but_check(w: &[Token<'_>], sentiments: &mut [f64]) {
    let Some(bi) = w.iter().position(|x| x.lower == "but") else {
        return;
    };
    for k in 0..sentiments.len() {
        let s = sentiments[k];
        let si = sentiments.iter().position(|x| *x == s).unwrap_or(k);
        if si < bi {
            sentiments[si] = s * 0.5;
        } else if si > bi {
            sentiments[si] = s * 1.5;
        }
    }
}

/// The number of `!` and `?` in a text. One pass over the bytes ('!' and
/// '?' are ASCII, so never part of another UTF-8 character):
/// `str::matches(char)` searches with memchr, which in WebAssembly is a slow
/// word-at-a-time loop (a tenth of the plugin's time per reading there).
pub fn marks(text: &str) -> (usize, usize) {
    text.bytes().fold((0usize, 0usize), |(e, q), b| {
        (e + usize::from(b == b'!'), q + usize::from(b == b'?'))
    })
}

/// VADER's punctuation emphasis: up to four `!` at 0.292 each; two or three
/// `?` at 0.18 each, more than three 0.96.
pub fn punctuation_emphasis(text: &str) -> f64 {
    let (ep_count, qm_count) = marks(text);
    let ep = ep_count.min(4) as f64 * 0.292;
    let qm = if qm_count > 1 {
        if qm_count <= 3 {
            qm_count as f64 * 0.18
        } else {
            0.96
        }
    } else {
        0.0
    };
    ep + qm
}

/// VADER's normalization of a summed score to −1..1 (alpha 15).
fn normalize(score: f64) -> f64 {
    (score / (score * score + 15.0).sqrt()).clamp(-1.0, 1.0)
}

/// Score a text (already emoji-glossed) with VADER's rules.
pub fn score(text: &str, mode: Mode) -> Scores {
    let tokens = tokenize(text, mode);
    score_tokens(text, &tokens)
}

/// Score already tokenized text (`text` is used for punctuation counts).
pub fn score_tokens(text: &str, tokens: &[Token<'_>]) -> Scores {
    let n = tokens.len();
    let allcaps = tokens.iter().filter(|t| t.is_upper).count();
    let cap_differential = n - allcaps;
    let is_cap_diff = 0 < cap_differential && cap_differential < n;

    let mut sentiments = Vec::with_capacity(n);
    let mut caps_emphasis = 0;
    let mut elongations = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let sentiment_bearing = tok.booster.is_some() || tok.lex.is_some();
        if sentiment_bearing && tok.is_upper && tok.text.chars().nth(1).is_some() {
            caps_emphasis += 1;
        }
        if tok.elongated {
            elongations += 1;
        }
        if tok.booster.is_some() {
            sentiments.push(0.0);
            continue;
        }
        if i + 1 < n && tok.lower == "kind" && tokens[i + 1].lower == "of" {
            sentiments.push(0.0);
            continue;
        }
        sentiments.push(sentiment_valence(tokens, i, is_cap_diff));
    }
    but_check(tokens, &mut sentiments);

    if sentiments.is_empty() {
        return Scores::default();
    }
    let mut sum_s: f64 = sentiments.iter().sum();
    let punct = punctuation_emphasis(text);
    if sum_s > 0.0 {
        sum_s += punct;
    } else if sum_s < 0.0 {
        sum_s -= punct;
    }
    let compound = normalize(sum_s);
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0, 0.0, 0.0);
    for &s in &sentiments {
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1.0;
        }
    }
    if pos_sum > neg_sum.abs() {
        pos_sum += punct;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= punct;
    }
    let total = pos_sum + neg_sum.abs() + neu_count;
    Scores {
        compound,
        pos: (pos_sum / total).abs(),
        neg: (neg_sum / total).abs(),
        neu: (neu_count / total).abs(),
        sentiments,
        punctuation: punct,
        caps_emphasis,
        elongations,
        emoticons: tokens.iter().filter(|t| t.emoticon).count(),
        tokens: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compound(text: &str) -> f64 {
        (score(text, Mode::Reference).compound * 1e4).round() / 1e4
    }

    /// Values printed by vaderSentiment 3.3.2's own demo for these sentences.
    #[test]
    fn reproduces_vader_reference_scores() {
        let cases = [
            ("VADER is smart, handsome, and funny.", 0.8316),
            ("VADER is smart, handsome, and funny!", 0.8439),
            ("VADER is very smart, handsome, and funny.", 0.8545),
            ("VADER is VERY SMART, handsome, and FUNNY.", 0.9227),
            ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342),
            (
                "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
                0.9469,
            ),
            ("VADER is not smart, handsome, nor funny.", -0.7424),
            ("The book was good.", 0.4404),
            ("At least it isn't a horrible book.", 0.431),
            ("The book was only kind of good.", 0.3832),
            (
                "The plot was good, but the characters are uncompelling and the dialog is not great.",
                -0.7042,
            ),
            ("Today SUX!", -0.5461),
            ("Today only kinda sux! But I'll get by, lol", 0.5249),
            ("Make sure you :) or :D today!", 0.8633),
            ("Not bad at all", 0.431),
            ("Sentiment analysis has never been good.", -0.3412),
            ("Sentiment analysis has never been this good!", 0.5672),
            ("Most automated sentiment analysis tools are shit.", -0.5574),
            ("With VADER, sentiment analysis is the shit!", 0.6476),
            ("Other sentiment analysis tools can be quite bad.", -0.5849),
            ("On the other hand, VADER is quite bad ass", 0.802),
            ("VADER is such a badass!", 0.4003),
            ("Without a doubt, excellent idea.", 0.7013),
            (
                "Roger Dodger is one of the most compelling variations on this theme.",
                0.2944,
            ),
            (
                "Roger Dodger is at least compelling as a variation on the theme.",
                0.2263,
            ),
            (
                "Roger Dodger is one of the least compelling variations on this theme.",
                -0.1695,
            ),
            ("Not such a badass after all.", -0.2584),
            ("Without a doubt, an excellent idea.", 0.7013),
            ("NO good at all", -0.4835),
            ("good good but bad bad", -0.8225),
            ("never so good", 0.5777),
            ("kind of good", 0.4404),
        ];
        for (text, expected) in cases {
            assert_eq!(compound(text), expected, "{text}");
        }
    }

    #[test]
    fn elongation_reads_as_emphasis_in_extended_mode() {
        let plain = score("this is good", Mode::Extended).compound;
        let long = score("this is gooood", Mode::Extended).compound;
        assert!(long > plain, "{long} vs {plain}");
        // The reference mode does not know "gooood".
        assert_eq!(score("this is gooood", Mode::Reference).compound, 0.0);
        let boosted = score("this is sooo good", Mode::Extended).compound;
        assert!(boosted > plain);
    }

    #[test]
    fn collapse_and_detect_runs() {
        assert_eq!(collapse_runs("gooood", 2), "good");
        assert_eq!(collapse_runs("gooood", 1), "god");
        assert!(has_elongation("sooo"));
        assert!(!has_elongation("good"));
        assert!(!has_elongation("1000"));
    }
}

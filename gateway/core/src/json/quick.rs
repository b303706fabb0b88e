//! A quick check for the JSON text the gateway sees most: a plugin's extra
//! fields and the objects of client events and of the buffer, which hold
//! short strings without `\u` escapes and numbers without exponents.
//!
//! serde_json stays the judge. This scan only answers "certainly valid"
//! (with the object's field count) for text in that plain subset and "ask
//! serde_json" for anything else: an error, an exponent (whose range only a
//! float conversion settles), a `\u` escape (lone surrogates), deep nesting
//! (serde_json's recursion limit), a fraction of over 1,000 digits. Walking such text with serde_json's
//! visitor converts every number to `f64` and was about a sixth of the
//! plugin host's time per facial frame; this is one pass over the bytes.
//! Every text it accepts, serde_json accepts too, with the same field count
//! (property-tested in `super::tests`).

/// Containers nested deeper than this are left to serde_json (whose limit
/// is 128).
const MAX_DEPTH: usize = 64;
/// An integer part of at most this many digits is below 10³⁰⁰, so finite
/// as an `f64` whatever follows it (without an exponent).
const MAX_INTEGER_DIGITS: usize = 300;
/// Longer fractions are left to serde_json: it counts a fraction's digits
/// in an `i32`, which a fraction of 2³¹ digits would overflow.
const MAX_FRACTION_DIGITS: usize = 1000;

/// `Some(fields)` when `text` is certainly one JSON object (whitespace
/// around it allowed) with that many fields, duplicates included; `None`
/// when serde_json must decide.
pub(super) fn object_fields(text: &str) -> Option<usize> {
    let mut s = Scan {
        bytes: text.as_bytes(),
        at: 0,
    };
    s.whitespace();
    if s.peek()? != b'{' {
        return None;
    }
    let fields = s.object(1)?;
    s.end()?;
    Some(fields)
}

/// Whether `text` is certainly one JSON value (whitespace around it
/// allowed); `false` when serde_json must decide.
pub(super) fn is_value(text: &str) -> bool {
    let mut s = Scan {
        bytes: text.as_bytes(),
        at: 0,
    };
    s.whitespace();
    s.value(0).and_then(|()| s.end()).is_some()
}

/// A cursor over the text's bytes. Every method returns `None` as soon as
/// the text leaves the plain subset (or is not JSON).
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.whitespace();
        (self.at == self.bytes.len()).then_some(())
    }

    /// One value starting at the cursor; `depth` containers enclose it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1).map(drop),
            b'[' => self.array(depth + 1),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The object at the cursor (at its `{`), and its field count.
    fn object(&mut self, depth: usize) -> Option<usize> {
        if self.open(depth, b'}')? {
            return Some(0);
        }
        let mut fields = 0;
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            self.string()?;
            self.whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            self.whitespace();
            self.value(depth)?;
            fields += 1;
            if self.closed(b'}')? {
                return Some(fields);
            }
        }
    }

    /// The array at the cursor (at its `[`).
    fn array(&mut self, depth: usize) -> Option<()> {
        if self.open(depth, b']')? {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.closed(b']')? {
                return Some(());
            }
        }
    }

    /// Past a container's opening bracket: `true` when it is empty (and
    /// past its `close` too); nesting beyond [`MAX_DEPTH`] is left to
    /// serde_json.
    fn open(&mut self, depth: usize, close: u8) -> Option<bool> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.whitespace();
        let empty = self.peek()? == close;
        if empty {
            self.at += 1;
        }
        Some(empty)
    }

    /// After an item: past a comma (`false`: another item follows) or past
    /// the container's `close` (`true`).
    fn closed(&mut self, close: u8) -> Option<bool> {
        self.whitespace();
        match self.peek()? {
            b',' => {
                self.at += 1;
                self.whitespace();
                Some(false)
            }
            b if b == close => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// The string at the cursor (at its opening quote). The text is a
    /// `&str`, so its bytes are valid UTF-8; JSON forbids raw control
    /// characters in strings.
    fn string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => match self.bytes.get(self.at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` with bounded integer and fraction
    /// parts; an exponent is left to serde_json.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                let start = self.at;
                self.digits();
                if self.at - start > MAX_INTEGER_DIGITS {
                    return None;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            let start = self.at;
            self.digits();
            if self.at == start || self.at - start > MAX_FRACTION_DIGITS {
                return None;
            }
        }
        match self.peek() {
            Some(b'e' | b'E') => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

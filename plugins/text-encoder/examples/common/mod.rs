//! Shared by the examples and the host bench: reading EmoBank, Pearson r.

use std::path::PathBuf;

/// One EmoBank sentence.
#[derive(Debug, Clone)]
pub struct Row {
    pub split: String,
    /// Valence and arousal, 1..5 (3 neutral).
    pub v: f64,
    pub a: f64,
    pub text: String,
}

/// `$EMOBANK_CSV`, or `shared/data/emobank/emobank_train_dev.csv` beside the
/// repository (found from the crate's directory: the plugin's or its
/// host bench's, one level deeper).
pub fn emobank_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EMOBANK_CSV") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rel = "shared/data/emobank/emobank_train_dev.csv";
    let candidates = [
        dir.join("../../..").join(rel),
        dir.join("../../../..").join(rel),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone()
}

/// Read EmoBank's train and dev rows; exits with a message if the file is
/// missing or malformed.
pub fn load_emobank() -> (PathBuf, Vec<Row>) {
    let path = emobank_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => fail(&format!(
            "cannot read EmoBank at {}: {e}\n(set EMOBANK_CSV to the path of emobank_train_dev.csv)",
            path.display()
        )),
    };
    let records = parse_csv(&text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
    let Some((header, body)) = records.split_first() else {
        fail(&format!("{}: empty file", path.display()));
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| fail(&format!("{}: no column {name:?}", path.display())))
    };
    let (cs, cv, ca, ct) = (col("split"), col("V"), col("A"), col("text"));
    let mut rows = Vec::with_capacity(body.len());
    for (i, r) in body.iter().enumerate() {
        let get = |c: usize| {
            r.get(c)
                .unwrap_or_else(|| fail(&format!("{}: record {} is short", path.display(), i + 2)))
        };
        let num = |c: usize| {
            get(c).parse::<f64>().unwrap_or_else(|_| {
                fail(&format!("{}: record {}: bad number", path.display(), i + 2))
            })
        };
        rows.push(Row {
            split: get(cs).clone(),
            v: num(cv),
            a: num(ca),
            text: get(ct).clone(),
        });
    }
    let train = rows.iter().filter(|r| r.split == "train").count();
    let dev = rows.iter().filter(|r| r.split == "dev").count();
    if train == 0 || dev == 0 {
        fail(&format!(
            "{}: expected train and dev rows, found {train} and {dev}",
            path.display()
        ));
    }
    (path, rows)
}

pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => in_quotes = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_start = true;
                continue;
            }
            other => field.push(other),
        }
        at_start = false;
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    if !at_start || !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Pearson correlation.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

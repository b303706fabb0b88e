//! Pearson r of the text-encoder plugin with EmoBank's ratings on the dev
//! split, through the plugin's own entry point with the embedded model:
//!
//!     cargo run --release -p emotion-plugin-text-encoder --example text_encoder_quality
//!
//! (`EMOBANK_CSV=/path/to/emobank_train_dev.csv` to read EmoBank from
//! elsewhere.) Also prints the native speed; the speed through the gateway's
//! plugin host is what host-bench/ measures.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use common::{load_emobank, pearson};
use emotion_plugin_text_encoder::{Settings, analyze_many};

fn main() {
    let (path, rows) = load_emobank();
    let dev: Vec<&common::Row> = rows.iter().filter(|r| r.split == "dev").collect();
    let inputs: Vec<_> = dev.iter().map(|r| Ok((r.text.as_str(), None))).collect();
    let settings = Settings::default();
    let start = Instant::now();
    let out: Vec<_> = inputs
        .chunks(100)
        .flat_map(|c| analyze_many(c, &settings))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    let (mut pv, mut pa, mut yv, mut ya) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ev, mut ea, mut mv, mut ma) = (0.0, 0.0, 0.0, 0.0);
    let mean_v = dev.iter().map(|r| r.v).sum::<f64>() / dev.len() as f64;
    let mean_a = dev.iter().map(|r| r.a).sum::<f64>() / dev.len() as f64;
    let mut none = 0;
    for (o, r) in out.iter().zip(&dev) {
        let (v, a) = match o {
            Ok(Some(a)) => (a.valence, a.arousal),
            // Nothing to read (".."): the circumplex's neutral point.
            Ok(None) => {
                none += 1;
                (0.0, 0.5)
            }
            Err(e) => common::fail(&format!("{:?}: {e}", r.text)),
        };
        pv.push(v);
        pa.push(a);
        yv.push(r.v);
        ya.push(r.a);
        // Errors on the circumplex scales, against always answering the mean.
        ev += (v - (r.v - 3.0) / 2.0).abs();
        ea += (a - (r.a - 1.0) / 4.0).abs();
        mv += ((mean_v - r.v) / 2.0).abs();
        ma += ((mean_a - r.a) / 4.0).abs();
    }
    let n = dev.len() as f64;
    println!("EmoBank dev, {} sentences ({})", dev.len(), path.display());
    println!(
        "text-encoder plugin (int8 all-MiniLM-L6-v2 with EmoBank-trained LoRA adapters, 7 pooled layers and the text plugin's scores, linear head)"
    );
    println!(
        "  Pearson r: valence {:.3}, arousal {:.3}   (targets 0.70 and 0.54)",
        pearson(&pv, &yv),
        pearson(&pa, &ya)
    );
    println!(
        "  mean absolute error on the circumplex: valence {:.3} (mean: {:.3}), arousal {:.3} (mean: {:.3})",
        ev / n,
        mv / n,
        ea / n,
        ma / n
    );
    println!("  sentences with nothing to read: {none}");
    println!(
        "  native speed: {:.0} sentences/s (one thread, batches of 100)",
        n / secs
    );
}

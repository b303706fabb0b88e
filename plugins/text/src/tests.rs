//! Native tests of the plugin's behaviour.

use emotion_plugin_sdk::{Facial, Text};

use super::*;

fn reading(payload: Payload) -> Reading {
    Reading {
        user_id: "u1".into(),
        session_id: "s1".into(),
        device_id: None,
        timestamp_ms: 0,
        source: Source::Text,
        payload,
    }
}

fn text_reading(content: &str, language: Option<&str>) -> Reading {
    reading(Payload::Text(Text {
        content: content.into(),
        language: language.map(Into::into),
    }))
}

fn analysis(text: &str) -> Analysis {
    analyze(text, None, &Settings::default())
        .expect("readable text")
        .expect("an emotion")
}

fn emotion(out: Outcome) -> Emotion {
    match out {
        Outcome::Emotion(e) => e,
        other => panic!("expected an emotion, got {other:?}"),
    }
}

fn error(out: Outcome) -> String {
    match out {
        Outcome::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn positive_and_negative_messages() {
    let good = analysis("I am so happy today, this is wonderful news!");
    let bad = analysis("This is awful. I hate everything about it and I feel terrible.");
    assert!(good.valence > 0.2, "{good:?}");
    assert!(bad.valence < -0.2, "{bad:?}");
    let plain = analysis("The meeting is scheduled for Tuesday at the main office.");
    assert!(
        plain.valence.abs() < good.valence.abs().min(bad.valence.abs()),
        "{plain:?}"
    );
}

#[test]
fn negation_flips_valence() {
    let good = analysis("The food was good.");
    let not_good = analysis("The food was not good.");
    assert!(
        good.valence > 0.0 && not_good.valence < good.valence,
        "{good:?} / {not_good:?}"
    );
    assert!(not_good.compound < 0.0, "VADER flips: {not_good:?}");
    let bad = analysis("The movie was bad.");
    let not_bad = analysis("The movie wasn't bad.");
    assert!(not_bad.valence > bad.valence, "{bad:?} / {not_bad:?}");
    assert!(not_bad.compound > 0.0, "{not_bad:?}");
}

#[test]
fn intensifiers_and_dampeners() {
    let base = analysis("The service was good.");
    let very = analysis("The service was very good.");
    let slightly = analysis("The service was slightly good.");
    assert!(very.compound > base.compound && base.compound > slightly.compound);
    assert!(very.valence > base.valence, "{very:?} / {base:?}");
    assert!(slightly.valence < base.valence, "{slightly:?} / {base:?}");
}

#[test]
fn emphasis_raises_intensity_and_arousal() {
    let calm = analysis("I love this place");
    let loud = analysis("I LOVE this place!!!");
    let long = analysis("I looooove this place");
    assert!(loud.compound > calm.compound && long.compound > calm.compound);
    assert!(loud.arousal > calm.arousal, "{loud:?} / {calm:?}");
    assert!(long.arousal > calm.arousal, "{long:?} / {calm:?}");
}

#[test]
fn emoticons_and_emoji_carry_sentiment() {
    let neutral = analysis("See you at the station");
    let smile = analysis("See you at the station :)");
    let frown = analysis("See you at the station :(");
    let joy = analysis("See you at the station \u{1F602}");
    let crying = analysis("See you at the station \u{1F62D}");
    assert!(smile.valence > neutral.valence && frown.valence < neutral.valence);
    assert!(joy.valence > crying.valence, "{joy:?} / {crying:?}");
    // An emoticon alone is still something to read.
    assert!(
        analyze(":)", None, &Settings::default())
            .expect("ok")
            .is_some()
    );
}

#[test]
fn outputs_stay_in_range() {
    for text in [
        "a",
        "!!!!!!!!!!!!!!!!!!!!!!!! HATE HATE HATE HATE KILL DIE",
        "love love love love love love love love love love love love best best best",
        "\u{1F621}\u{1F621}\u{1F621}\u{1F621}\u{1F621}\u{1F621}",
        "no no no no no not never nothing",
    ] {
        let a = analysis(text);
        assert!((-1.0..=1.0).contains(&a.valence), "{text}: {a:?}");
        assert!((0.0..=1.0).contains(&a.arousal), "{text}: {a:?}");
        assert!((0.60..=0.80).contains(&a.confidence), "{text}: {a:?}");
    }
}

#[test]
fn confidence_falls_with_poor_input() {
    let long =
        analysis("I had a really lovely dinner with my family tonight and we laughed a lot.");
    let short = analysis("ok");
    let unknown = analysis("Xqzv blorft snarg wibblet frumious quonk zindle.");
    let german = analyze(
        "Ich bin heute sehr glücklich, weil die Sonne scheint.",
        Some("de"),
        &Settings::default(),
    )
    .expect("ok")
    .expect("an emotion");
    let declared_english = analyze(
        "I had a really lovely dinner with my family tonight and we laughed a lot.",
        Some("en-GB"),
        &Settings::default(),
    )
    .expect("ok")
    .expect("an emotion");
    let cyrillic = analysis("Я сегодня очень счастлив");
    for a in [
        &long,
        &short,
        &unknown,
        &german,
        &declared_english,
        &cyrillic,
    ] {
        assert!((0.60..=0.80).contains(&a.confidence), "{a:?}");
    }
    assert!(long.confidence > 0.75, "{long:?}");
    assert_eq!(long.confidence, declared_english.confidence);
    assert!(short.confidence < long.confidence - 0.05, "{short:?}");
    assert!(unknown.confidence < long.confidence - 0.05, "{unknown:?}");
    assert!(german.confidence < long.confidence - 0.1, "{german:?}");
    assert!(cyrillic.confidence < 0.62, "{cyrillic:?}");
}

#[test]
fn bad_input_is_a_per_reading_error() {
    let s = Settings::default();
    assert!(error(normalize_reading(&s, text_reading("", None))).contains("empty"));
    assert!(error(normalize_reading(&s, text_reading(" \n\t  ", None))).contains("empty"));
    let long = "word ".repeat(DEFAULT_MAX_BYTES / 5 + 1);
    assert!(error(normalize_reading(&s, text_reading(&long, None))).contains("max_bytes"));
    let small = Settings { max_bytes: 10 };
    assert!(matches!(
        analyze("this is more than ten bytes", None, &small),
        Err(TextError::TooLong { .. })
    ));
    let facial = reading(Payload::Facial(Facial {
        action_units: vec![],
        landmarks: vec![],
        head_pose: None,
        detection_quality: None,
    }));
    assert!(error(normalize_reading(&s, facial)).contains("facial"));
    assert!(error(normalize_reading(&s, reading(Payload::Json("{}".into())))).contains("json"));
    assert!(error(normalize_reading(&s, reading(Payload::Raw(vec![1, 2])))).contains("raw"));
}

#[test]
fn nothing_to_read_is_no_emotion() {
    let s = Settings::default();
    for text in ["...", "?!", "- - -", "\u{1F3FD}"] {
        let out = normalize_reading(&s, text_reading(text, None));
        assert!(matches!(out, Outcome::None), "{text:?}: {out:?}");
    }
}

#[test]
fn batch_answers_every_reading_in_order() {
    let s = Settings::default();
    let outs: Vec<Outcome> = ["great!", "", "terrible"]
        .iter()
        .map(|t| normalize_reading(&s, text_reading(t, None)))
        .collect();
    let first = emotion(outs[0].clone());
    assert!(first.valence > 0.0);
    assert!(first.label.is_none(), "the gateway names the nearest label");
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&first.extra).expect("one JSON object");
    assert!(fields.contains_key("text"));
    assert!(matches!(outs[1], Outcome::Error(_)));
    assert!(emotion(outs[2].clone()).valence < 0.0);
}

#[test]
fn settings_parse_with_fallbacks() {
    assert_eq!(Settings::parse("{}"), (Settings::default(), None));
    let (s, w) = Settings::parse(r#"{"max_bytes": 100}"#);
    assert_eq!((s.max_bytes, w), (100, None));
    let (s, w) = Settings::parse(r#"{"max_bytes": 0, "colour": 1}"#);
    assert_eq!(s, Settings::default());
    let w = w.expect("warnings");
    assert!(w.contains("max_bytes") && w.contains("colour"), "{w}");
    let (s, w) = Settings::parse("not json");
    assert_eq!(s, Settings::default());
    assert!(w.is_some());
}

#[test]
fn info_names_the_text_source() {
    let info = TextPlugin::info();
    assert_eq!(info.name, "text");
    assert_eq!(info.sources, vec![Source::Text]);
    serde_json::from_str::<Value>(&info.settings_schema).expect("schema is JSON");
}

#[test]
fn english_tags() {
    assert!(is_english(None));
    assert!(is_english(Some("en")));
    assert!(is_english(Some("EN-us")));
    assert!(is_english(Some("")));
    assert!(!is_english(Some("de-CH")));
    assert!(!is_english(Some("fr")));
}

#[test]
fn native_batch_uses_default_settings() {
    let outs = TextPlugin::normalize(vec![
        text_reading("what a lovely day", None),
        text_reading("", None),
    ]);
    assert_eq!(outs.len(), 2);
    assert!(emotion(outs[0].clone()).valence > 0.0);
    assert!(matches!(outs[1], Outcome::Error(_)));
    assert!(TextPlugin::normalize(Vec::new()).is_empty());
}

//! WebSocket clients speaking the original protocol:
//! `ws://HOST/ws/emotions/stream?user_id=…&token=…`, one JSON event per
//! message, each answered (in order) by `{"status":"processed",…}` or an
//! error reply. The events carry the fields and optional objects the
//! original producer sent (`context`, `biometrics`, `location`,
//! `device_info`, `raw_data`), with valence and arousal from a journey.

use std::time::Duration;

use chrono::Utc;
use emotion_core::{EmotionLabel, Source};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::devices::Script;
use crate::physio::{EdaParams, HeartParams, Rng, rng};

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the gateway closed the connection{0}")]
    Closed(String),
    #[error("WebSocket: {0}")]
    Socket(String),
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// The gateway's answer to one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Stored (durable). `duplicate`: it had been stored before (a retry).
    Processed { event_id: String, duplicate: bool },
    /// Refused (`invalid_json`, `validation_error`, …).
    Rejected { error: String, message: String },
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stream URL for a gateway given as `ws://host:port`, `http://host:port`
/// (mapped to ws) or `host:port`.
pub fn stream_url(gateway: &str, user_id: &str, token: &str) -> String {
    let g = gateway.trim_end_matches('/');
    let base = if let Some(rest) = g.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = g.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if g.starts_with("ws://") || g.starts_with("wss://") {
        g.to_owned()
    } else {
        format!("ws://{g}")
    };
    format!(
        "{base}/ws/emotions/stream?user_id={}&token={}",
        encode_query(user_id),
        encode_query(token)
    )
}

/// One user's connection to the event stream.
#[derive(Debug)]
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// From the welcome message.
    pub session_id: Option<String>,
}

impl WsClient {
    /// Connect and read the welcome (`{"status":"connected",…}`).
    pub async fn connect(
        gateway: &str,
        user_id: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Self, WsError> {
        let url = stream_url(gateway, user_id, token);
        let shown = stream_url(gateway, user_id, "***");
        let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(&url))
            .await
            .map_err(|_| WsError::Connect {
                url: shown.clone(),
                reason: format!("timed out after {timeout:?}"),
            })?
            .map_err(|e| WsError::Connect {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        let mut client = Self {
            ws,
            session_id: None,
        };
        let welcome = client.next_json(timeout).await?;
        if welcome["status"] != "connected" {
            return Err(WsError::Protocol(format!(
                "expected a welcome, got {welcome}"
            )));
        }
        client.session_id = welcome["session_id"].as_str().map(str::to_owned);
        Ok(client)
    }

    async fn next_json(&mut self, timeout: Duration) -> Result<Value, WsError> {
        loop {
            let msg = tokio::time::timeout(timeout, self.ws.next())
                .await
                .map_err(|_| WsError::Timeout(timeout))?;
            match msg {
                None => return Err(WsError::Closed(String::new())),
                Some(Err(e)) => return Err(WsError::Socket(e.to_string())),
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str())
                        .map_err(|e| WsError::Protocol(format!("reply is not JSON: {e}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!(" (code {}: {})", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    return Err(WsError::Closed(why));
                }
                // Pings are answered by tungstenite; binary is not ours.
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Send one event and wait for its reply.
    pub async fn send(&mut self, event: &Value, timeout: Duration) -> Result<Reply, WsError> {
        self.ws
            .send(Message::text(event.to_string()))
            .await
            .map_err(|e| WsError::Socket(e.to_string()))?;
        let reply = self.next_json(timeout).await?;
        match reply["status"].as_str() {
            Some("processed") => Ok(Reply::Processed {
                event_id: reply["event_id"].as_str().unwrap_or_default().to_owned(),
                duplicate: reply["duplicate"].as_bool().unwrap_or(false),
            }),
            Some("error") => Ok(Reply::Rejected {
                error: reply["error"].as_str().unwrap_or("error").to_owned(),
                message: reply["message"].as_str().unwrap_or_default().to_owned(),
            }),
            _ => Err(WsError::Protocol(reply.to_string())),
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The sources a simulated user's events rotate through, physiological and
/// voice most often (as the original producer's mix).
const SOURCES: [Source; 10] = [
    Source::Physiological,
    Source::Voice,
    Source::Facial,
    Source::Text,
    Source::Physiological,
    Source::Biometric,
    Source::Voice,
    Source::Behavioral,
    Source::Survey,
    Source::Contextual,
];

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Generates one user's events along a journey.
#[derive(Debug, Clone)]
pub struct EventGen {
    pub user_id: String,
    script: Script,
    rng: Rng,
    n: u64,
}

impl EventGen {
    pub fn new(user_id: impl Into<String>, script: Script, seed: u64) -> Self {
        Self {
            user_id: user_id.into(),
            script,
            rng: rng(seed),
            n: 0,
        }
    }

    /// The event at simulated time `t_s` into the journey. Every event gets
    /// a fresh `event_id`, so resending it after a reconnect is idempotent.
    pub fn event_at(&mut self, t_s: f64) -> Value {
        let source = SOURCES[(self.n % SOURCES.len() as u64) as usize];
        self.n += 1;
        let affect = self.script.affect_at(t_s);
        let valence = r3((affect.valence + 0.08 * self.rng.normal()).clamp(-1.0, 1.0));
        let arousal = r3((affect.arousal + 0.06 * self.rng.normal()).clamp(0.0, 1.0));
        let label = EmotionLabel::nearest(valence, arousal);
        let (lo, hi) = source.confidence_range();
        let confidence = r3(lo + (hi - lo) * self.rng.uniform());
        let mut e = json!({
            "event_id": uuid::Uuid::now_v7().to_string(),
            "user_id": self.user_id,
            "source": source.as_str(),
            "emotion_label": label.as_str(),
            "valence": valence,
            "arousal": arousal,
            "confidence": confidence,
            "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        let hour_names = ["morning", "afternoon", "evening"];
        let context = json!({
            "time_period": hour_names[(self.n % 3) as usize],
            "day_of_week": "friday",
            "weather": if self.rng.uniform() < 0.7 { "sunny" } else { "cloudy" },
            "simulated_seconds": r3(t_s),
            "journey": self.script.journey.as_str(),
        });
        let heart = HeartParams::for_arousal(affect.arousal);
        let eda = EdaParams::for_arousal(affect.arousal);
        let biometrics = json!({
            "heart_rate": r3(heart.mean_hr_bpm + 2.0 * self.rng.normal()),
            "skin_conductance": r3(eda.scl_us + 0.2 * self.rng.normal()),
            "breathing_rate": r3(heart.breathing_rate_bpm + 0.5 * self.rng.normal()),
            "temperature": r3(97.9 + 1.2 * affect.arousal + 0.1 * self.rng.normal()),
        });
        let device_info =
            json!({"device_type": "smartwatch", "platform": "iOS", "app_version": "2.3.1"});
        let location = json!({"type": "office", "latitude": -23.561414, "longitude": -46.655881, "accuracy": 12.5});
        let Value::Object(m) = &mut e else {
            return e;
        };
        match source {
            Source::Physiological => {
                m.insert("biometrics".into(), biometrics);
                m.insert("context".into(), context);
                m.insert(
                    "raw_data".into(),
                    json!({"sensor_reading": r3(heart.mean_hr_bpm), "rmssd_estimate_ms": r3(heart.rsa_amplitude_ms * 0.76)}),
                );
            }
            Source::Biometric => {
                m.insert("biometrics".into(), biometrics);
                m.insert("device_info".into(), device_info);
            }
            Source::Voice => {
                m.insert(
                    "context".into(),
                    json!({"call_type": "phone", "speech_rate": r3(110.0 + 60.0 * arousal), "volume_level": r3(0.3 + 0.5 * arousal)}),
                );
                m.insert(
                    "raw_data".into(),
                    json!({"audio_duration": 12.5,
                           "frequency_analysis": {"fundamental_freq": r3(150.0 + 80.0 * arousal), "formants": [700, 1220, 2600]},
                           "speech_features": {"jitter": r3(0.01 + 0.02 * arousal), "shimmer": r3(0.03 + 0.04 * arousal)}}),
                );
            }
            Source::Facial => {
                m.insert(
                    "context".into(),
                    json!({"detection_quality": r3(0.85 + 0.1 * self.rng.uniform()), "lighting_conditions": "good", "face_angle": "frontal"}),
                );
                m.insert(
                    "raw_data".into(),
                    json!({"action_units": {"AU4": r3((-valence).max(0.0) * 3.0), "AU6": r3(valence.max(0.0) * 3.0),
                                            "AU12": r3(valence.max(0.0) * 3.5), "AU5": r3(arousal * 2.0)},
                           "head_pose": {"pitch": 2.0, "yaw": -5.5, "roll": 1.0}}),
                );
                m.insert("device_info".into(), device_info);
            }
            Source::Text => {
                m.insert(
                    "context".into(),
                    json!({"message_type": "chat", "message_length": 40 + self.rng.next_u64() % 200, "contains_emojis": self.rng.uniform() < 0.3}),
                );
                m.insert(
                    "raw_data".into(),
                    json!({"text_sample": format!("Sample text showing {} emotion...", label.as_str()),
                           "word_count": 5 + self.rng.next_u64() % 40,
                           "sentiment_scores": {"positive": r3(valence.max(0.0)), "negative": r3((-valence).max(0.0)), "neutral": r3(1.0 - valence.abs())}}),
                );
                m.insert("location".into(), location);
            }
            Source::Behavioral => {
                m.insert("location".into(), location);
            }
            Source::Contextual => {
                m.insert("context".into(), context);
            }
            Source::Survey => {}
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::Journey;

    #[test]
    fn urls() {
        assert_eq!(
            stream_url("http://127.0.0.1:8080/", "42", "a b&c"),
            "ws://127.0.0.1:8080/ws/emotions/stream?user_id=42&token=a%20b%26c"
        );
        assert_eq!(
            stream_url("localhost:1", "u", "t"),
            "ws://localhost:1/ws/emotions/stream?user_id=u&token=t"
        );
    }

    #[test]
    fn events_are_valid_for_the_gateway() {
        let mut g = EventGen::new(
            "7",
            Script::new(Journey::Volatile, Duration::from_secs(60)),
            3,
        );
        let ctx = emotion_core::IngestContext {
            user_id: Some("7"),
            session_id: None,
            gateway_id: "gw",
            producer: "client",
            now: Utc::now(),
            event_id: uuid::Uuid::now_v7(),
            confidence_in_source_range: true,
        };
        for i in 0..50 {
            let e = g.event_at(f64::from(i));
            let Value::Object(body) = &e else {
                panic!("an object: {e}");
            };
            let r = emotion_core::event::validate(body, &ctx);
            assert!(r.is_ok(), "{e}: {r:?}");
        }
    }
}

//! The few MQTT packets the load tool needs (CONNECT, PUBLISH out;
//! CONNACK, PUBACK, DISCONNECT in), MQTT 3.1.1 and 5, written and read by
//! hand: a PUBLISH is encoded once per payload and then only copied, with
//! its packet id and sequence number patched in place, so a message costs
//! a copy into the socket buffer and nothing else.

/// Append MQTT's variable-length integer.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    // Callers keep strings short (ids, tokens, topics); longer ones are cut
    // rather than mis-encoded.
    let s = &s[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// A CONNECT with a clean session and keep-alive off (the run keeps the
/// connection busy; the gateway then never times it out).
pub fn connect(client_id: &str, login: Option<(&str, &str)>, v5: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(if v5 { 5 } else { 4 });
    let mut flags = 0x02; // clean session / clean start
    if login.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&0u16.to_be_bytes()); // keep alive: off
    if v5 {
        varint(0, &mut body); // no properties
    }
    string(client_id.as_bytes(), &mut body);
    if let Some((user, password)) = login {
        string(user.as_bytes(), &mut body);
        string(password.as_bytes(), &mut body);
    }
    packet(0x10, &body)
}

/// A PUBLISH encoded once, to be copied per message.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    pub bytes: Vec<u8>,
    /// Where the packet id goes (QoS 1).
    pub pkid_at: Option<usize>,
    /// Where the payload's sequence-number placeholder starts.
    pub seq_at: usize,
}

/// Encode a PUBLISH of `payload` to `topic`; `seq_in_payload` is the offset
/// of a placeholder in `payload` that [`PublishTemplate::seq_at`] then
/// locates in the packet.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    v5: bool,
    seq_in_payload: usize,
) -> PublishTemplate {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 8);
    string(topic.as_bytes(), &mut body);
    let pkid_in_body = (qos > 0).then(|| {
        let at = body.len();
        body.extend_from_slice(&1u16.to_be_bytes());
        at
    });
    if v5 {
        varint(0, &mut body); // no properties
    }
    let payload_in_body = body.len();
    body.extend_from_slice(payload);
    let header = 1 + varint_len(body.len());
    PublishTemplate {
        bytes: packet(0x30 | (qos.min(2) << 1), &body),
        pkid_at: pkid_in_body.map(|at| header + at),
        seq_at: header + payload_in_body + seq_in_payload,
    }
}

fn varint_len(n: usize) -> usize {
    let mut v = Vec::with_capacity(4);
    varint(n, &mut v);
    v.len()
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// `code` 0 is success; `receive_max` the MQTT 5 Receive Maximum (the
    /// QoS 1 messages the broker takes unacknowledged).
    ConnAck {
        code: u8,
        receive_max: Option<u16>,
    },
    /// `reason` 0 (or 0x10, no subscribers) is success; ≥ 0x80 a refusal
    /// (MQTT 5 only).
    PubAck {
        pkid: u16,
        reason: u8,
    },
    Disconnect {
        reason: u8,
    },
    /// Anything else (by packet type), ignored.
    Other(u8),
}

/// Decode the first packet in `buf`: `Ok(None)` when it is not complete
/// yet, else the packet and the bytes it took.
pub fn decode(buf: &[u8], v5: bool) -> Result<Option<(Incoming, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    let mut shift = 0;
    loop {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << shift;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err("a malformed remaining length".into());
        }
    }
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let packet = match first >> 4 {
        2 => {
            let code = *body.get(1).ok_or("a short CONNACK")?;
            let receive_max = if v5 {
                connack_receive_max(body.get(2..).unwrap_or_default())?
            } else {
                None
            };
            Incoming::ConnAck { code, receive_max }
        }
        4 => {
            let pkid = u16::from_be_bytes([
                *body.first().ok_or("a short PUBACK")?,
                *body.get(1).ok_or("a short PUBACK")?,
            ]);
            let reason = if v5 {
                body.get(2).copied().unwrap_or(0)
            } else {
                0
            };
            Incoming::PubAck { pkid, reason }
        }
        14 => Incoming::Disconnect {
            reason: body.first().copied().unwrap_or(0),
        },
        t => Incoming::Other(t),
    };
    Ok(Some((packet, at + len)))
}

/// The Receive Maximum among a CONNACK's properties (`props` starts with
/// their length).
fn connack_receive_max(props: &[u8]) -> Result<Option<u16>, String> {
    if props.is_empty() {
        return Ok(None);
    }
    let (len, mut at) = read_varint(props)?;
    let end = (at + len).min(props.len());
    let bad = || "malformed CONNACK properties".to_owned();
    while at < end {
        let id = props[at];
        at += 1;
        let u16_at = |i: usize| -> Result<u16, String> {
            Ok(u16::from_be_bytes([
                *props.get(i).ok_or_else(bad)?,
                *props.get(i + 1).ok_or_else(bad)?,
            ]))
        };
        match id {
            0x21 => return Ok(Some(u16_at(at)?)),
            // One byte.
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => at += 1,
            // Two bytes.
            0x22 | 0x13 => at += 2,
            // Four bytes.
            0x11 | 0x27 => at += 4,
            // A string or binary data.
            0x12 | 0x1F | 0x1A | 0x1C | 0x15 | 0x16 => at += 2 + usize::from(u16_at(at)?),
            // A string pair.
            0x26 => {
                at += 2 + usize::from(u16_at(at)?);
                at += 2 + usize::from(u16_at(at)?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(None)
}

fn read_varint(b: &[u8]) -> Result<(usize, usize), String> {
    let mut n = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        n |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err("a malformed variable-length integer".into())
}

/// The name of an MQTT 5 PUBACK reason code, with the code (as
/// [`crate::mqtt::puback_reason`] names them).
pub fn puback_reason_name(code: u8) -> String {
    let name = match code {
        0x00 => "success",
        0x10 => "no matching subscribers",
        0x80 => "unspecified error",
        0x83 => "implementation specific error",
        0x87 => "not authorized",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x97 => "quota exceeded",
        0x99 => "payload format invalid",
        _ => "reason",
    };
    format!("{name} (0x{code:02x})")
}

/// The name of a CONNACK return (3.1.1) or reason (5) code.
pub fn connack_name(code: u8, v5: bool) -> String {
    let name = match (code, v5) {
        (0, _) => "accepted",
        (1, false) => "unacceptable protocol version",
        (2, false) => "identifier rejected",
        (3, false) => "server unavailable",
        (4, false) | (0x86, true) => "bad username or password",
        (5, false) | (0x87, true) => "not authorized",
        (0x84, true) => "unsupported protocol version",
        (0x85, true) => "client identifier not valid",
        (0x88, true) => "server unavailable",
        (0x89, true) => "server busy",
        (0x97, true) => "quota exceeded",
        _ => "refused",
    };
    format!("{name} (0x{code:02x})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        for (n, want) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut v = Vec::new();
            varint(n, &mut v);
            assert_eq!(v, want, "{n}");
            assert_eq!(read_varint(&v), Ok((n, want.len())));
        }
    }

    #[test]
    fn a_publish_template_locates_its_packet_id_and_sequence_number() {
        let payload = vec![b'x'; 300];
        for (qos, v5) in [(1, true), (1, false), (0, true), (0, false)] {
            let t = publish("emotions/7/events", &payload, qos, v5, 10);
            assert_eq!(t.bytes[0], 0x30 | (qos << 1));
            // 300-odd bytes: a two-byte remaining length.
            let (len, n) = read_varint(&t.bytes[1..]).expect("length");
            assert_eq!(n, 2);
            assert_eq!(t.bytes.len(), 1 + n + len);
            assert_eq!(&t.bytes[1 + n + 2..1 + n + 2 + 17], b"emotions/7/events");
            assert_eq!(t.pkid_at.is_some(), qos == 1);
            if let Some(at) = t.pkid_at {
                assert_eq!(&t.bytes[at..at + 2], &[0, 1]);
            }
            assert_eq!(t.seq_at + 290, t.bytes.len());
        }
    }

    #[test]
    fn incoming_packets() {
        // Not complete yet.
        assert_eq!(decode(&[0x40], true), Ok(None));
        assert_eq!(decode(&[0x40, 0x02, 0x00], true), Ok(None));
        // MQTT 5 PUBACK, success shortcut and a refusal; 3.1.1.
        assert_eq!(
            decode(&[0x40, 0x02, 0x01, 0x02, 0xff], true),
            Ok(Some((
                Incoming::PubAck {
                    pkid: 258,
                    reason: 0
                },
                4
            )))
        );
        assert_eq!(
            decode(&[0x40, 0x04, 0x00, 0x09, 0x97, 0x00], true),
            Ok(Some((
                Incoming::PubAck {
                    pkid: 9,
                    reason: 0x97
                },
                6
            )))
        );
        // CONNACK (5) with session expiry, receive maximum 256, max packet size.
        let connack = [
            0x20, 0x10, 0x00, 0x00, 0x0d, 0x11, 0, 0, 0, 0, 0x21, 0x01, 0x00, 0x27, 0, 1, 0, 0,
        ];
        assert_eq!(
            decode(&connack, true),
            Ok(Some((
                Incoming::ConnAck {
                    code: 0,
                    receive_max: Some(256)
                },
                18
            )))
        );
        assert_eq!(
            decode(&[0x20, 0x02, 0x00, 0x05], false),
            Ok(Some((
                Incoming::ConnAck {
                    code: 5,
                    receive_max: None
                },
                4
            )))
        );
        assert_eq!(
            decode(&[0xe0, 0x01, 0x8e], true),
            Ok(Some((Incoming::Disconnect { reason: 0x8e }, 3)))
        );
        assert!(decode(&[0x40, 0xff, 0xff, 0xff, 0xff, 0x01], true).is_err());
        assert_eq!(puback_reason_name(0x97), "quota exceeded (0x97)");
    }

    #[test]
    fn connect_packets() {
        let c = connect("load-1", Some(("dev", "pw")), true);
        assert_eq!(c[0], 0x10);
        assert_eq!(&c[2..8], b"\x00\x04MQTT");
        assert_eq!(c[8], 5);
        assert_eq!(c[9], 0xc2);
        assert_eq!(usize::from(c[1]), c.len() - 2);
        let c4 = connect("x", None, false);
        assert_eq!((c4[8], c4[9]), (4, 0x02));
    }
}

//! MQTT framing: where a packet ends, and the header fields of a PUBLISH
//! that rumqttd's decoder keeps private (QoS, DUP, packet id).
//!
//! The fixed header is the same in MQTT 3.1.1 and 5: one byte of type and
//! flags, then the remaining length (1–4 bytes, 7 bits each). A PUBLISH's
//! variable header starts with the topic (u16 length + bytes), followed by
//! the packet id when QoS > 0 (MQTT 5 properties come after it).

/// Packet type of PUBLISH in the high nibble of the first byte.
pub const PUBLISH: u8 = 3;
/// Packet type of CONNECT.
pub const CONNECT: u8 = 1;

/// Where the next packet in a buffer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet to know.
    Incomplete,
    /// The remaining length is not valid MQTT (more than 4 bytes).
    Malformed,
    /// A packet of `header_len + remaining` bytes starts here.
    Packet {
        packet_type: u8,
        header_len: usize,
        remaining: usize,
    },
}

impl Frame {
    #[cfg(test)]
    pub fn total(&self) -> Option<usize> {
        match self {
            Frame::Packet {
                header_len,
                remaining,
                ..
            } => Some(header_len + remaining),
            _ => None,
        }
    }
}

/// Read the fixed header at the start of `buf`.
pub fn frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Frame::Incomplete;
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Frame::Packet {
                packet_type: first >> 4,
                header_len: 2 + i,
                remaining,
            };
        }
    }
    Frame::Malformed
}

/// The header fields of a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishMeta {
    pub qos: u8,
    pub dup: bool,
    pub retain: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
    /// Where the topic lies in the packet.
    pub topic_start: usize,
    pub topic_len: usize,
}

impl PublishMeta {
    /// Bytes of the packet needed to read the meta (header, topic, packet id).
    pub fn needed(buf: &[u8], header_len: usize) -> Option<usize> {
        let qos = (buf.first()? >> 1) & 3;
        let tl = buf.get(header_len..header_len + 2)?;
        let topic_len = usize::from(u16::from_be_bytes([tl[0], tl[1]]));
        Some(header_len + 2 + topic_len + if qos > 0 { 2 } else { 0 })
    }
}

/// The meta of the PUBLISH at the start of `buf` (`header_len` from
/// [`frame`]); `None` when not enough bytes are there yet, or the QoS bits
/// are invalid (3).
pub fn publish_meta(buf: &[u8], header_len: usize) -> Option<PublishMeta> {
    let first = *buf.first()?;
    let qos = (first >> 1) & 3;
    if qos == 3 {
        return None;
    }
    let tl = buf.get(header_len..header_len + 2)?;
    let topic_len = usize::from(u16::from_be_bytes([tl[0], tl[1]]));
    let topic_start = header_len + 2;
    let pkid = if qos > 0 {
        let p = buf.get(topic_start + topic_len..topic_start + topic_len + 2)?;
        u16::from_be_bytes([p[0], p[1]])
    } else {
        0
    };
    Some(PublishMeta {
        qos,
        dup: first & 0b1000 != 0,
        retain: first & 1 != 0,
        pkid,
        topic_start,
        topic_len,
    })
}

/// The protocol level of a CONNECT at the start of `buf` (4 for 3.1.1, 5),
/// once enough of it is there.
pub fn connect_level(buf: &[u8], header_len: usize) -> Option<u8> {
    let nl = buf.get(header_len..header_len + 2)?;
    let name_len = usize::from(u16::from_be_bytes([nl[0], nl[1]]));
    buf.get(header_len + 2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, dup: bool, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut out = vec![0x30 | (qos << 1) | if dup { 8 } else { 0 }];
        let mut n = body.len();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }

    #[test]
    fn remaining_length_in_one_to_four_bytes() {
        assert_eq!(frame(&[]), Frame::Incomplete);
        assert_eq!(frame(&[0x30]), Frame::Incomplete);
        assert_eq!(
            frame(&[0x30, 0x00]),
            Frame::Packet {
                packet_type: 3,
                header_len: 2,
                remaining: 0
            }
        );
        assert_eq!(
            frame(&[0x30, 0xc1, 0x02]),
            Frame::Packet {
                packet_type: 3,
                header_len: 3,
                remaining: 321
            }
        );
        assert_eq!(frame(&[0x30, 0xff, 0xff, 0xff]), Frame::Incomplete);
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0x7f]).total(),
            Some(5 + 268_435_455)
        );
        assert_eq!(
            frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Frame::Malformed
        );
    }

    #[test]
    fn publish_meta_reads_qos_dup_and_packet_id() {
        let p = publish(1, true, "sensors/a/text", 777, b"{}");
        let Frame::Packet { header_len, .. } = frame(&p) else {
            panic!("frame");
        };
        let m = publish_meta(&p, header_len).expect("meta");
        assert_eq!((m.qos, m.dup, m.retain, m.pkid), (1, true, false, 777));
        assert_eq!(
            &p[m.topic_start..m.topic_start + m.topic_len],
            b"sensors/a/text"
        );
        assert_eq!(
            PublishMeta::needed(&p, header_len),
            Some(header_len + 2 + 14 + 2)
        );

        let big = publish(0, false, "t", 0, &vec![b'x'; 300]);
        let Frame::Packet {
            header_len,
            remaining,
            ..
        } = frame(&big)
        else {
            panic!("frame");
        };
        assert_eq!(header_len, 3);
        assert_eq!(remaining, 2 + 1 + 300);
        let m = publish_meta(&big, header_len).expect("meta");
        assert_eq!((m.qos, m.pkid), (0, 0));
        // Truncated before the packet id: not yet.
        assert_eq!(publish_meta(&p[..header_len + 5], header_len), None);
        // QoS 3 is invalid.
        let mut bad = p.clone();
        bad[0] |= 0b110;
        assert_eq!(publish_meta(&bad, header_len), None);
    }

    #[test]
    fn connect_level_is_found() {
        // CONNECT, remaining 12: "MQTT", level 5, ...
        let c = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0];
        assert_eq!(connect_level(&c, 2), Some(5));
        assert_eq!(connect_level(&c[..6], 2), None);
    }

    /// The codec this module stands beside agrees on where packets end.
    #[test]
    fn agrees_with_rumqttd_codec() {
        use bytes::BytesMut;
        use rumqttd::protocol::{Packet, Protocol, v4::V4};
        let p = publish(1, false, "sensors/a/text", 9, br#"{"x":1}"#);
        let mut buf = BytesMut::from(&p[..]);
        buf.extend_from_slice(&p);
        let total = frame(&buf).total().expect("total");
        assert_eq!(total, p.len());
        let mut codec = V4;
        match codec.read_mut(&mut buf, 1 << 20) {
            Ok(Packet::Publish(publish, _)) => {
                assert_eq!(&publish.topic[..], b"sensors/a/text");
                assert_eq!(&publish.payload[..], br#"{"x":1}"#);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.len(), p.len(), "exactly one packet consumed");
    }
}

//! The peer wire format: a batch of raft messages, each as a big-endian u32 length followed by
//! its protobuf encoding.

use protobuf::Message as _;
use raft::prelude::Message;

/// Most messages in one batch, and largest encoded message accepted: bounds what a peer can
/// make this node allocate.
pub(crate) const MAX_BATCH: usize = 4096;
const MAX_MESSAGE_BYTES: usize = 64 << 20;

pub(crate) fn encode(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        // Encoding a well-formed in-memory message cannot fail; skip rather than panic.
        if let Ok(bytes) = m.write_to_bytes() {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    out
}

pub(crate) fn decode(mut body: &[u8]) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if messages.len() == MAX_BATCH {
            return Err(format!("more than {MAX_BATCH} messages in one batch"));
        }
        let (len, rest) = body.split_at_checked(4).ok_or("truncated length prefix")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(format!("a message of {len} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit"));
        }
        let (bytes, rest) = rest.split_at_checked(len).ok_or("truncated message")?;
        messages.push(Message::parse_from_bytes(bytes).map_err(|e| format!("not a raft message: {e}"))?);
        body = rest;
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let batch: Vec<Message> =
            (1..=3).map(|i| Message { from: 1, to: 2, term: i, ..Default::default() }).collect();
        let bytes = encode(&batch);
        assert_eq!(decode(&bytes).expect("decodes"), batch);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[0, 0, 0]).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[]).expect("an empty batch").is_empty());
    }
}

//! The peer wire format: a batch of raft messages, each as a big-endian u32 length followed by
//! its protobuf encoding.

use protobuf::Message as _;
use raft::prelude::Message;

/// Most messages in one batch: with the caller's byte limit, bounds what a peer can make this
/// node allocate.
pub(crate) const MAX_BATCH: usize = 4096;

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

/// Decodes a batch; any message larger than `max_message` bytes is refused.
pub(crate) fn decode(mut body: &[u8], max_message: usize) -> Result<Vec<Message>, String> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if messages.len() == MAX_BATCH {
            return Err(format!("more than {MAX_BATCH} messages in one batch"));
        }
        let (len, rest) = body.split_at_checked(4).ok_or("truncated length prefix")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > max_message {
            return Err(format!("a message of {len} bytes exceeds the {max_message} byte limit"));
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
        let max = 1 << 20;
        assert_eq!(decode(&bytes, max).expect("decodes"), batch);
        assert!(decode(&bytes[..bytes.len() - 1], max).is_err());
        assert!(decode(&[0, 0, 0], max).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], max).is_err());
        assert!(decode(&[], max).expect("an empty batch").is_empty());
        assert!(decode(&bytes, 4).is_err(), "a message over the limit is refused");
    }
}

//! Block-wise transfers (RFC 7959) as plain data: the Block1/Block2 option value, slicing a
//! response body into the block a client asked for (Block2, stateless: every block is cut from
//! the full representation again, and an ETag lets the client notice a change), and the
//! reassembly of request bodies that arrive in blocks (Block1), bounded in count, size and age.
//!
//! No sockets and no clock of its own: callers pass `now`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The largest block (SZX 6). SZX 7 is BERT, for CoAP over TCP only.
pub(crate) const MAX_SZX: u8 = 6;

/// A Block1 or Block2 option value: `NUM | M | SZX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) num: u32,
    pub(crate) more: bool,
    pub(crate) szx: u8,
}

impl Block {
    pub(crate) fn size(self) -> usize {
        1 << (self.szx as usize + 4)
    }

    /// Decodes an option value (0 to 3 bytes). `None` when it is malformed or uses SZX 7.
    pub(crate) fn decode(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let raw = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (raw & 0x7) as u8;
        if szx > MAX_SZX {
            return None;
        }
        Some(Block {
            num: raw >> 4,
            more: raw & 0x8 != 0,
            szx,
        })
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        let raw = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        encode_uint(raw)
    }
}

/// A CoAP uint option value: big-endian with no leading zero bytes (0 is empty).
pub(crate) fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decodes a uint option value of at most `max_len` bytes.
pub(crate) fn decode_uint(value: &[u8], max_len: usize) -> Option<u32> {
    if value.len() > max_len || value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// The SZX for a block size limit (the largest block not above it).
pub(crate) fn szx_for(limit: usize) -> u8 {
    let mut szx = MAX_SZX;
    while szx > 0 && (1usize << (szx + 4)) > limit {
        szx -= 1;
    }
    szx
}

/// Cuts block `want.num` of `body` at `want.szx`. `None` when the block starts past the end
/// (4.02 Bad Option, RFC 7959 §2.4). A client that asks for block 0 of a body that fits gets
/// the whole body with M=0.
pub(crate) fn slice(body: &[u8], want: Block) -> Option<(&[u8], Block)> {
    let size = want.size();
    let start = (want.num as usize).checked_mul(size)?;
    if start > body.len() || (start == body.len() && start != 0) {
        return None;
    }
    let end = (start + size).min(body.len());
    Some((
        &body[start..end],
        Block {
            num: want.num,
            more: end < body.len(),
            szx: want.szx,
        },
    ))
}

/// A short entity tag of a representation (64-bit FNV-1a), so a client fetching blocks can tell
/// that the representation changed between them.
pub(crate) fn etag(body: &[u8]) -> [u8; 8] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.to_be_bytes()
}

/// Limits of block-wise request bodies (Block1, RFC 7959 §2.5).
#[derive(Debug, Clone, Copy)]
pub struct Block1Limits {
    /// Largest reassembled body (4.13 with Size1 beyond it).
    pub max_body: usize,
    /// Transfers in progress at once, over all clients.
    pub max_transfers: usize,
    /// Transfers in progress per client endpoint.
    pub max_per_peer: usize,
    /// A transfer with no block for this long is dropped.
    pub idle: Duration,
}

impl Default for Block1Limits {
    fn default() -> Self {
        Block1Limits {
            max_body: 64 * 1024,
            max_transfers: 256,
            max_per_peer: 4,
            idle: Duration::from_secs(60),
        }
    }
}

/// Which request a transfer belongs to: RFC 7959 §2.5 matches blocks by endpoint and request
/// (method + URI), not by token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TransferKey {
    pub(crate) peer: SocketAddr,
    pub(crate) method: u8,
    pub(crate) uri: String,
}

#[derive(Debug)]
struct Transfer {
    body: Vec<u8>,
    next: u32,
    szx: u8,
    touched: Instant,
}

/// What to do with one Block1 request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Block1Step {
    /// An intermediate block was stored: answer 2.31 Continue echoing this option.
    Continue(Block),
    /// The last block arrived: here is the whole body; echo this option on the final response.
    Complete(Vec<u8>, Block),
    /// 4.08 Request Entity Incomplete: a block is missing or out of order.
    Incomplete,
    /// 4.13 Request Entity Too Large: the body (or this client's transfers) exceed the limit.
    TooLarge,
    /// 5.03: too many transfers in progress.
    Busy,
}

/// Request bodies being reassembled.
#[derive(Debug, Default)]
pub(crate) struct Block1Store {
    limits: Block1Limits,
    transfers: HashMap<TransferKey, Transfer>,
}

impl Block1Store {
    pub(crate) fn new(limits: Block1Limits) -> Self {
        Block1Store {
            limits,
            transfers: HashMap::new(),
        }
    }

    pub(crate) fn limits(&self) -> Block1Limits {
        self.limits
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.transfers.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// Takes one block. `size1` is the total size the client announced, if any.
    pub(crate) fn accept(
        &mut self,
        key: TransferKey,
        block: Block,
        payload: &[u8],
        size1: Option<u32>,
        now: Instant,
    ) -> Block1Step {
        let max = self.limits.max_body;
        if size1.is_some_and(|s| s as usize > max) {
            self.transfers.remove(&key);
            return Block1Step::TooLarge;
        }
        // Every block but the last carries exactly the block size (RFC 7959 §2.3).
        if block.more && payload.len() != block.size() {
            self.transfers.remove(&key);
            return Block1Step::Incomplete;
        }
        if block.num == 0 {
            if !block.more {
                self.transfers.remove(&key);
                return Block1Step::Complete(payload.to_vec(), block);
            }
            if !self.transfers.contains_key(&key) {
                self.expire(now);
                if self.transfers.len() >= self.limits.max_transfers {
                    return Block1Step::Busy;
                }
                let mine = self.transfers.keys().filter(|k| k.peer == key.peer).count();
                if mine >= self.limits.max_per_peer {
                    return Block1Step::Busy;
                }
            }
            self.transfers.insert(
                key,
                Transfer {
                    body: payload.to_vec(),
                    next: 1,
                    szx: block.szx,
                    touched: now,
                },
            );
            return Block1Step::Continue(block);
        }
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return Block1Step::Incomplete;
        };
        // The client may lower the size mid-transfer; the offset must still line up.
        let offset = block.num as usize * block.size();
        if offset != transfer.body.len() || block.szx > transfer.szx {
            self.transfers.remove(&key);
            return Block1Step::Incomplete;
        }
        if transfer.body.len() + payload.len() > max {
            self.transfers.remove(&key);
            return Block1Step::TooLarge;
        }
        transfer.body.extend_from_slice(payload);
        transfer.next = block.num + 1;
        transfer.szx = block.szx;
        transfer.touched = now;
        if block.more {
            Block1Step::Continue(block)
        } else {
            let body = self.transfers.remove(&key).map(|t| t.body).unwrap_or_default();
            Block1Step::Complete(body, block)
        }
    }

    /// Drops transfers idle for longer than the limit.
    pub(crate) fn expire(&mut self, now: Instant) {
        let idle = self.limits.idle;
        self.transfers
            .retain(|_, t| now.saturating_duration_since(t.touched) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TransferKey {
        TransferKey {
            peer: "127.0.0.1:5000".parse().unwrap(),
            method: 3,
            uri: "/x".into(),
        }
    }

    #[test]
    fn option_round_trip() {
        for (num, more, szx) in [(0, false, 0), (1, true, 6), (4095, false, 2), (65535, true, 4)] {
            let b = Block { num, more, szx };
            assert_eq!(Block::decode(&b.encode()), Some(b));
        }
        assert_eq!(
            Block::decode(&[]),
            Some(Block {
                num: 0,
                more: false,
                szx: 0
            })
        );
        assert_eq!(Block::decode(&[0x07]), None, "SZX 7 is BERT");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn slicing_with_random_access() {
        let body: Vec<u8> = (0..100u8).collect();
        let (b, o) = slice(
            &body,
            Block {
                num: 0,
                more: false,
                szx: 0,
            },
        )
        .unwrap();
        assert_eq!((b, o.more), (&body[0..16], true));
        let (b, o) = slice(
            &body,
            Block {
                num: 6,
                more: false,
                szx: 0,
            },
        )
        .unwrap();
        assert_eq!((b, o.more), (&body[96..100], false));
        let (b, _) = slice(
            &body,
            Block {
                num: 3,
                more: false,
                szx: 0,
            },
        )
        .unwrap();
        assert_eq!(b, &body[48..64]);
        assert!(
            slice(
                &body,
                Block {
                    num: 7,
                    more: false,
                    szx: 0
                }
            )
            .is_none()
        );
        let (b, o) = slice(
            &body,
            Block {
                num: 0,
                more: false,
                szx: 6,
            },
        )
        .unwrap();
        assert_eq!((b.len(), o.more), (100, false));
        assert!(
            slice(
                &[],
                Block {
                    num: 0,
                    more: false,
                    szx: 2
                }
            )
            .is_some()
        );
        assert!(
            slice(
                &body,
                Block {
                    num: u32::MAX >> 4,
                    more: false,
                    szx: 6
                }
            )
            .is_none()
        );
    }

    #[test]
    fn szx_limits() {
        assert_eq!(szx_for(1024), 6);
        assert_eq!(szx_for(1000), 5);
        assert_eq!(szx_for(16), 0);
        assert_eq!(szx_for(1), 0);
    }

    #[test]
    fn block1_reassembly() {
        let now = Instant::now();
        let mut store = Block1Store::new(Block1Limits::default());
        let b = |num, more| Block { num, more, szx: 0 };
        assert_eq!(
            store.accept(key(), b(0, true), &[1; 16], None, now),
            Block1Step::Continue(b(0, true))
        );
        assert_eq!(
            store.accept(key(), b(1, true), &[2; 16], None, now),
            Block1Step::Continue(b(1, true))
        );
        let Block1Step::Complete(body, last) = store.accept(key(), b(2, false), &[3; 5], None, now) else {
            panic!("not complete")
        };
        assert_eq!(body.len(), 37);
        assert_eq!(last, b(2, false));
        assert!(store.is_empty());
    }

    #[test]
    fn block1_errors() {
        let now = Instant::now();
        let limits = Block1Limits {
            max_body: 40,
            max_transfers: 2,
            max_per_peer: 1,
            idle: Duration::from_secs(1),
        };
        let mut store = Block1Store::new(limits);
        let b = |num, more| Block { num, more, szx: 0 };
        assert_eq!(
            store.accept(key(), b(1, true), &[0; 16], None, now),
            Block1Step::Incomplete
        );
        assert_eq!(
            store.accept(key(), b(0, true), &[0; 16], Some(41), now),
            Block1Step::TooLarge
        );
        assert_eq!(
            store.accept(key(), b(0, true), &[0; 10], None, now),
            Block1Step::Incomplete
        );
        store.accept(key(), b(0, true), &[0; 16], None, now);
        assert_eq!(
            store.accept(key(), b(2, true), &[0; 16], None, now),
            Block1Step::Incomplete
        );
        store.accept(key(), b(0, true), &[0; 16], None, now);
        store.accept(key(), b(1, true), &[0; 16], None, now);
        assert_eq!(
            store.accept(key(), b(2, true), &[0; 16], None, now),
            Block1Step::TooLarge
        );
        // Per-peer bound, then expiry frees the slot.
        let mut other = key();
        other.uri = "/y".into();
        store.accept(key(), b(0, true), &[0; 16], None, now);
        assert_eq!(
            store.accept(other.clone(), b(0, true), &[0; 16], None, now),
            Block1Step::Busy
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            store.accept(other, b(0, true), &[0; 16], None, later),
            Block1Step::Continue(b(0, true))
        );
        assert_eq!(store.len(), 1);
    }
}

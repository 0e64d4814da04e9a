//! Primitives of the compact stored forms of records (the trace log's
//! [`crate::trace::stored`], the message records of [`super::messages`]): unsigned LEB128
//! varints, length-prefixed UTF-8 strings and lists of them, times, and hashes kept as
//! their 32 raw bytes.
//!
//! What it owns: these encodings and their bounds checks, nothing of any record's
//! layout. What it must distrust: the bytes it reads come from disk and may be damaged:
//! every length is checked against what is left (so a count cannot size an allocation),
//! strings must be UTF-8, and every failure is a [`DecodeError`], never a panic.
//!
//! The encodings (varint = unsigned LEB128, at most 10 bytes; str = varint length then
//! UTF-8; list = varint count then str each; time = i64 seconds then i32 nanoseconds,
//! big-endian; hash = `0x00` and the 32 bytes its lower-case hex stands for, or `0x01`
//! and a str).

use jiff::Timestamp;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn put_list(out: &mut Vec<u8>, l: &[String]) {
    put_varint(out, l.len() as u64);
    for s in l {
        put_str(out, s);
    }
}

/// A time: i64 seconds, then the i32 nanoseconds of the second (negative before 1970),
/// big-endian: exactly the [`Timestamp`] given.
pub(crate) fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.as_second().to_be_bytes());
    out.extend_from_slice(&t.subsec_nanosecond().to_be_bytes());
}

/// A hash as its raw bytes when it is 64 lower-case hex digits (so that it decodes back
/// to the same text), otherwise as text.
pub(crate) fn put_hash(out: &mut Vec<u8>, h: &str) {
    let lower_hex = h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match hex::decode(h) {
        Ok(raw) if lower_hex => {
            out.push(0);
            out.extend_from_slice(&raw);
        }
        _ => {
            out.push(1);
            put_str(out, h);
        }
    }
}

/// Why a compact value cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("value ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} is too long a number")]
    Varint(&'static str),
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("unknown {what} {value:#x}")]
    Unknown { what: &'static str, value: u64 },
    #[error("time out of range")]
    Time,
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

pub(crate) struct Reader<'a> {
    v: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(v: &'a [u8]) -> Self {
        Self { v }
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// Nothing may follow the last field.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.v.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// A time written by [`put_time`].
    pub(crate) fn time(&mut self, what: &'static str) -> Result<Timestamp, DecodeError> {
        let secs = i64::from_be_bytes(self.array(what)?);
        let nanos = i32::from_be_bytes(self.array(what)?);
        Timestamp::new(secs, nanos).map_err(|_| DecodeError::Time)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.v.len() {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.v.split_at(n);
        self.v = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        self.take(N, what)?
            .try_into()
            .map_err(|_| DecodeError::Truncated(what))
    }

    pub(crate) fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(DecodeError::Varint(what));
            }
            n |= part << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::Varint(what))
    }

    pub(crate) fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated(what))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8(what))
    }

    pub(crate) fn opt_str(
        &mut self,
        present: u64,
        bit: u64,
        what: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        if present & bit == 0 {
            return Ok(None);
        }
        self.str(what).map(Some)
    }

    pub(crate) fn list(&mut self, what: &'static str) -> Result<Vec<String>, DecodeError> {
        let n = self.varint(what)?;
        // Each entry takes at least one byte: a count beyond what is left is damage, and
        // must not size an allocation.
        if n > self.v.len() as u64 {
            return Err(DecodeError::Truncated(what));
        }
        (0..n).map(|_| self.str(what)).collect()
    }

    pub(crate) fn hash(&mut self, what: &'static str) -> Result<String, DecodeError> {
        match self.byte(what)? {
            0 => Ok(hex::encode(self.take(32, what)?)),
            1 => self.str(what),
            other => Err(DecodeError::Unknown {
                what: "hash form",
                value: other.into(),
            }),
        }
    }
}

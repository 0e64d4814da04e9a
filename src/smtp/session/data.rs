//! DATA reception: storing the dot-unstuffed content (handed out in chunks when streamed),
//! counting wire bytes since the 354, the size and (submission only) line-length checks,
//! the bare-CR check, the discard of a refused transfer up to the final dot, and the bound
//! past which it is cut off (552 and close).
//!
//! Line ends (RFC 5321 §2.3.8; the 2023 SMTP-smuggling fixes): the transfer ends only at
//! `<CRLF>.<CRLF>`. A bare LF is content (the access and incoming points turn it into
//! CRLF, as Postfix's `smtpd_forbid_bare_newline = normal` does), so `<LF>.<LF>` and
//! `<LF>.<CRLF>` never end the DATA. A bare CR, which some receivers take for a line end,
//! is refused on every port, and the connection is closed after the refusal: whatever the
//! client meant to follow it is never read as commands. This also covers smtp-proto's
//! one lenient terminator, `<CRLF>.<CR><CR>…<LF>`, which leaves a bare CR at the end of
//! the content.
//!
//! Owns: `data`, `data_flushed`, `data_rx`, `discard_rx`, `data_received`,
//! `data_line_len`, `line_ends` while in the DATA phases. Must not touch: command-line framing
//! (`framing`), command handling, or the decision on the message (that is the driver's,
//! through [`Event::Message`]).

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};

use super::{Envelope, Event, Phase, Session};

/// Why a message is being refused while its DATA is still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DataFault {
    TooBig,
    LineTooLong,
    /// The driver could not keep the content (`limits.max_inflight_data_bytes`).
    NoStorage,
    /// A CR not followed by LF in the content.
    BareCr,
}

/// The bare-CR scan of the current transfer's `data`: how far it has looked and whether
/// the last octet it looked at was a CR. The last octet of `data` is looked at only once
/// the transfer ended or another octet follows it (smtp-proto may take a trailing CR back).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LineEnds {
    scanned: usize,
    prev_cr: bool,
    bare_cr: bool,
}

impl LineEnds {
    /// Looks at `data[self.scanned..]` (all of it when `done`, else all but a trailing CR).
    /// Returns true once a bare CR was seen in this transfer.
    fn scan(&mut self, data: &[u8], done: bool) -> bool {
        let end = if !done && data.last() == Some(&b'\r') {
            data.len() - 1
        } else {
            data.len()
        };
        for &b in data.get(self.scanned..end).unwrap_or_default() {
            self.bare_cr |= self.prev_cr && b != b'\n';
            self.prev_cr = b == b'\r';
        }
        self.scanned = end;
        if done && self.prev_cr {
            self.bare_cr = true;
        }
        self.bare_cr
    }

    /// `data` lost its first `n` octets (handed out as a chunk).
    fn drained(&mut self, n: usize) {
        self.scanned = self.scanned.saturating_sub(n);
    }
}

impl Session {
    pub(super) fn step_data(
        &mut self,
        iter: &mut std::slice::Iter<'_, u8>,
        out: &mut Vec<Event>,
    ) -> bool {
        let before = iter.as_slice().len();
        let stored = self.data.len();
        let done = self.data_rx.ingest(iter, &mut self.data);
        self.data_received += before - iter.as_slice().len();
        // smtp-proto stores the CR of a possible final `.CRLF` and pops it only when the
        // LF arrives, so while the transfer is open `data` may hold one octet that is not
        // content: allow it then, and check the exact size at the final dot.
        let slack = usize::from(!done && self.data.last() == Some(&b'\r'));
        let fault = if self.line_ends.scan(&self.data, done) {
            Some(DataFault::BareCr)
        } else if self.line_too_long_since(stored) {
            Some(DataFault::LineTooLong)
        } else if self.data_flushed + self.data.len()
            > self.cfg.max_message_bytes.saturating_add(slack)
        {
            Some(DataFault::TooBig)
        } else {
            None
        };
        if let Some(fault) = fault {
            // Stop storing; keep reading (within the bound) until the final dot, then refuse.
            self.data = Vec::new();
            if std::mem::take(&mut self.data_flushed) > 0 {
                out.push(Event::DataDiscarded);
            }
            if done {
                self.refuse_data(fault, out);
                return false;
            }
            self.discard_rx = Some(DummyDataReceiver::new_data(&self.data_rx));
            self.phase = Phase::DataDiscard(fault);
            return self.check_discard_bound(out) || iter.as_slice().is_empty();
        }
        if done {
            self.phase = Phase::AwaitingMessage;
            out.push(Event::Message(Envelope {
                mail_from: self.mail_from.clone(),
                rcpt_to: self.rcpt_to.clone(),
                data: std::mem::take(&mut self.data),
                authenticated: self.authenticated.clone(),
                helo: self.helo.clone(),
                tls: self.tls,
            }));
        } else if self.data.len() >= self.data_chunk {
            // A trailing CR stays: smtp-proto takes it back if an LF ends the transfer.
            let keep = usize::from(self.data.last() == Some(&b'\r'));
            let tail = self.data.split_off(self.data.len() - keep);
            let chunk = std::mem::replace(&mut self.data, tail);
            self.line_ends.drained(chunk.len());
            self.data_flushed += chunk.len();
            out.push(Event::DataChunk(chunk));
        }
        true
    }

    /// The driver could not keep the last [`Event::DataChunk`]: the rest of the transfer
    /// is read and dropped, and the final dot answered 452 4.3.1. Returns false when no
    /// transfer is being received (e.g. it already ended: the driver answers it itself).
    pub fn abort_data(&mut self) -> bool {
        if self.phase != Phase::Data {
            return false;
        }
        self.data = Vec::new();
        self.data_flushed = 0;
        self.discard_rx = Some(DummyDataReceiver::new_data(&self.data_rx));
        self.phase = Phase::DataDiscard(DataFault::NoStorage);
        true
    }

    pub(super) fn step_discard(
        &mut self,
        fault: DataFault,
        iter: &mut std::slice::Iter<'_, u8>,
        out: &mut Vec<Event>,
    ) -> bool {
        let before = iter.as_slice().len();
        let done = self.discard_rx.as_mut().is_some_and(|d| d.ingest(iter));
        self.data_received += before - iter.as_slice().len();
        if done {
            self.refuse_data(fault, out);
            return false;
        }
        self.check_discard_bound(out);
        true
    }

    /// Past [`SessionConfig::discard_bound`](super::SessionConfig::discard_bound) a refused transfer is not read any further:
    /// 552 and close. Returns true when the session was closed.
    fn check_discard_bound(&mut self, out: &mut Vec<Event>) -> bool {
        if self.data_received <= self.cfg.discard_bound() {
            return false;
        }
        let mail_from = self.mail_from.clone();
        self.refuse(
            out,
            552,
            "5.3.4",
            format!(
                "Message refused and too much data after it ({} octets at most), closing the connection",
                self.cfg.discard_bound()
            ),
            Some(&mail_from),
        );
        self.close(out);
        true
    }

    /// Ends the session after the refusal just queued: nothing more is read.
    fn close(&mut self, out: &mut Vec<Event>) {
        out.push(Event::Close);
        self.reset_transaction();
        self.pending.clear();
        self.line_scanned = 0;
        self.phase = Phase::Closed;
    }

    /// Whether a line of `data` from offset `from` on is longer than the DATA line limit
    /// (CRLF included; counted after dot-unstuffing, so one octet of leniency for stuffed
    /// lines). Always false where there is no such limit ([`SessionConfig::data_line_limit`](super::SessionConfig::data_line_limit)).
    fn line_too_long_since(&mut self, from: usize) -> bool {
        let Some(max) = self.cfg.data_line_limit() else {
            return false;
        };
        let mut too_long = false;
        for seg in self
            .data
            .get(from..)
            .unwrap_or_default()
            .split_inclusive(|&b| b == b'\n')
        {
            self.data_line_len += seg.len();
            if self.data_line_len > max {
                too_long = true;
            }
            if seg.last() == Some(&b'\n') {
                self.data_line_len = 0;
            }
        }
        too_long
    }

    /// The reply at the final dot of a message refused while it arrived.
    fn refuse_data(&mut self, fault: DataFault, out: &mut Vec<Event>) {
        let mail_from = self.mail_from.clone();
        match fault {
            DataFault::TooBig => self.refuse(
                out,
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum message size ({} octets)",
                    self.cfg.max_message_bytes
                ),
                Some(&mail_from),
            ),
            DataFault::NoStorage => self.refuse(
                out,
                452,
                "4.3.1",
                "Insufficient system storage, try again later".to_string(),
                Some(&mail_from),
            ),
            DataFault::BareCr => {
                self.refuse(
                    out,
                    554,
                    "5.6.0",
                    "Message refused: bare CR in the content, line ends must be CRLF \
                     (RFC 5321 §2.3.8); closing the connection"
                        .to_string(),
                    Some(&mail_from),
                );
                self.close(out);
                return;
            }
            DataFault::LineTooLong => self.refuse(
                out,
                554,
                "5.6.0",
                format!(
                    "Message not accepted: a line is longer than {} octets, CRLF included \
                     (RFC 5321 §4.5.3.1.6)",
                    self.cfg
                        .data_line_limit()
                        .unwrap_or(self.cfg.max_line_length)
                ),
                Some(&mail_from),
            ),
        }
        self.reset_transaction();
    }
}

/// A DATA receiver that knows it stands at the start of a line. smtp-proto's starts with
/// no previous CRLF, so it would miss the final dot of an empty message (`.` as the very
/// first line) and would not unstuff a leading dot on the first line (RFC 5321 §4.5.2).
pub(super) fn primed_data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

//! Input framing for command and AUTH lines: taking one LF-terminated line from the
//! pending input within a length limit, scanning a slowly arriving line only once
//! (`line_scanned`), and dropping an over-long line up to its LF (`discarding_line`).
//!
//! Owns: the line scan and the over-long line discard. Must not touch: command parsing,
//! the phase (the caller decides what a too-long line means) or DATA, which is not
//! framed by line here (see `data`).

use super::Session;

/// One line taken from the input.
pub(super) enum Line<'a> {
    /// A whole line within the limit, LF included.
    Complete(&'a [u8]),
    /// No LF yet and still within the limit: wait for more input.
    Incomplete,
    /// Over the limit: the line is (being) discarded up to its LF.
    TooLong,
}

impl Session {
    /// While `discarding_line` is set (an over-long line was refused), drops input up to
    /// and including the line's LF. Returns true when the LF has not arrived yet (all of
    /// `iter` was dropped and processing must pause).
    pub(super) fn skip_discarded_line(&mut self, iter: &mut std::slice::Iter<'_, u8>) -> bool {
        let rest = iter.as_slice();
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                *iter = rest.get(p + 1..).unwrap_or_default().iter();
                self.discarding_line = false;
                false
            }
            None => {
                *iter = [].iter();
                true
            }
        }
    }

    /// Takes one line (LF included) of at most `limit` octets from `iter`. An over-long
    /// line is consumed up to its LF, or entirely with `discarding_line` set when its LF
    /// has not arrived yet.
    pub(super) fn take_line<'a>(
        &mut self,
        iter: &mut std::slice::Iter<'a, u8>,
        limit: usize,
    ) -> Line<'a> {
        let rest: &'a [u8] = iter.as_slice();
        let from = std::mem::take(&mut self.line_scanned).min(rest.len());
        let lf = rest
            .get(from..)
            .unwrap_or_default()
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + from);
        match lf {
            Some(p) => {
                let (line, tail) = rest.split_at(p + 1);
                *iter = tail.iter();
                if line.len() <= limit {
                    Line::Complete(line)
                } else {
                    Line::TooLong
                }
            }
            None if rest.len() >= limit => {
                *iter = [].iter();
                self.discarding_line = true;
                Line::TooLong
            }
            None => {
                // Left in `pending`; the next call starts after what was scanned.
                self.line_scanned = rest.len();
                Line::Incomplete
            }
        }
    }
}

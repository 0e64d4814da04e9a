//! Tests of the SMTP client's pure parts (dot-stuffing, 8-bit detection, capabilities);
//! the unwraps see only values built here.

use super::*;

#[test]
fn dot_stuffing() {
    assert_eq!(
        dot_stuff(b".a\r\nb\r\n..c\r\n"),
        b"..a\r\nb\r\n...c\r\n.\r\n"
    );
    assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
}

/// Fed in pieces cut anywhere (between a CR and its LF, after a line end, before a
/// dot), the output is byte for byte the whole message's.
#[test]
fn dot_stuffing_in_pieces_is_the_same_as_whole() {
    let inputs: [&[u8]; 7] = [
        b".a\r\nb\r\n..c\r\n",
        b"x\r\r\n.\n\r.y\r",
        b"\r\n.\r\n",
        b"",
        b"\r",
        b".",
        b"a\n\n.\r\n\r\n.",
    ];
    for input in inputs {
        let whole = dot_stuff(input);
        for size in 1..=input.len().max(1) {
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            for piece in input.chunks(size) {
                s.feed(piece, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, whole, "{input:?} in pieces of {size}");
        }
    }
}

/// Whatever line ends the stored bytes hold, the wire has CR and LF only as CRLF,
/// every dot at a line start stuffed, and one end of data: the last five octets.
#[test]
fn dot_stuffing_output_is_canonical_for_every_end_of_data_variant() {
    let variants: [&[u8]; 9] = [
        b"\r\n.\r\n",
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
        b"\r\n.\r",
        b".\r\n",
    ];
    for v in variants {
        let msg = [&b"Subject: s\r\n\r\nbody"[..], v, b"MAIL FROM:<x@y>\r\nend"].concat();
        let wire = dot_stuff(&msg);
        for (i, &b) in wire.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(wire.get(i + 1), Some(&b'\n'), "{v:?}: bare CR at {i}"),
                b'\n' => assert!(i > 0 && wire[i - 1] == b'\r', "{v:?}: bare LF at {i}"),
                _ => {}
            }
        }
        let ends: Vec<usize> = wire
            .windows(5)
            .enumerate()
            .filter(|(_, w)| *w == b"\r\n.\r\n")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            ends,
            vec![wire.len() - 5],
            "{v:?}: {:?}",
            String::from_utf8_lossy(&wire)
        );
        assert!(!wire.starts_with(b".\r\n"), "{v:?}");
    }
}

#[test]
fn seven_bit_detection_and_capabilities() {
    assert!(is_7bit(b"Subject: ciao\r\n\r\nplain ascii\r\n"));
    assert!(!is_7bit("perché".as_bytes()));
    assert!(!is_7bit(b"nul\0byte"));
    let caps = "sink.test\nPIPELINING\n8BITMIME\nSIZE 1000";
    assert!(offers(caps, "8bitmime"));
    assert!(offers(caps, "SIZE"));
    assert!(!offers(caps, "STARTTLS"));
    assert!(!offers("sink.test\nX-8BITMIMEISH", "8BITMIME"));
}

/// The stuffing as it was first written, a byte at a time: the reference the run-at-a-time
/// [`DotStuffer::feed`] must match.
fn stuff_bytewise(pieces: &[&[u8]]) -> Vec<u8> {
    let (mut at_line_start, mut after_cr, mut wrote) = (true, false, false);
    let mut out = Vec::new();
    for &b in pieces.concat().iter() {
        if std::mem::take(&mut after_cr) && b == b'\n' {
            continue;
        }
        if b == b'\r' || b == b'\n' {
            out.extend_from_slice(b"\r\n");
            after_cr = b == b'\r';
            at_line_start = true;
            wrote = true;
            continue;
        }
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = false;
        wrote = true;
    }
    if !(wrote && at_line_start) {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Inputs of CR, LF, dots, NUL, DEL, 8-bit and plain bytes (a fixed pseudo-random
/// sequence, so a failure repeats).
fn mixed_inputs() -> Vec<Vec<u8>> {
    let alphabet = [b'\r', b'\n', b'.', b'a', 0, 0x7f, 0x80, 0xff];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..400)
        .map(|n| {
            (0..n % 61)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect()
        })
        .collect()
}

/// Cut into pieces of every size up to 9, and in two at every point with an empty piece
/// between.
#[test]
fn dot_stuffing_a_run_at_a_time_is_the_bytewise_stuffing() {
    for input in mixed_inputs() {
        let sizes = (1..=9).map(|size| input.chunks(size).collect::<Vec<&[u8]>>());
        let cuts = (0..=input.len()).map(|i| vec![&input[..i], &[][..], &input[i..]]);
        for pieces in sizes.chain(cuts) {
            let mut s = DotStuffer::default();
            let mut out = Vec::new();
            for p in &pieces {
                s.feed(p, &mut out);
            }
            s.finish(&mut out);
            assert_eq!(out, stuff_bytewise(&pieces), "{pieces:?}");
        }
        let seven = input.iter().all(|&b| b != 0 && b < 0x80);
        assert_eq!(is_7bit(&input), seven, "{input:?}");
    }
}

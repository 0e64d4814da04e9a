//! The zip container of a bundle, written **canonically**: entries stored (no compression),
//! in the order given, each dated 1980-01-01 00:00 (the zip epoch) with mode 0644, no
//! comments and no extra fields. The same entries therefore always give the same bytes,
//! which lets the checker rebuild the container from the entries it read and require the
//! file to be identical: a byte changed anywhere in the zip structure (a date, a name, a
//! comment, padding), not only inside an entry, is then detected.
//!
//! Reading distrusts the file: at most [`MAX_ENTRIES`] entries, stored entries only (so an
//! entry can never be larger than the file: no decompression bomb), and a CRC-32 mismatch
//! is reported against the entry it concerns.

use std::io::{Cursor, Read, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// The most entries a bundle may hold (the checker refuses more).
pub const MAX_ENTRIES: usize = 20_000;

/// One file of a bundle: its path inside the zip and its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub bytes: Vec<u8>,
}

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .large_file(false)
}

/// The canonical zip of `entries`.
pub fn write(entries: &[Entry]) -> Result<Vec<u8>, zip::result::ZipError> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries {
        w.start_file(e.path.as_str(), options())?;
        w.write_all(&e.bytes)?;
    }
    Ok(w.finish()?.into_inner())
}

/// Why entries could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Not a zip at all (or its central directory is unreadable).
    NotZip(String),
    /// A zip whose entry `entry` (its name, or `#index` when the name is unreadable) is
    /// damaged or not what a bundle holds.
    Entry { entry: String, message: String },
}

/// Reads every entry of `bytes`, in central-directory order.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, ReadError> {
    let mut z =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| ReadError::NotZip(e.to_string()))?;
    if z.len() > MAX_ENTRIES {
        return Err(ReadError::NotZip(format!(
            "{} entries, more than a bundle may hold ({MAX_ENTRIES})",
            z.len()
        )));
    }
    let mut out = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(|e| ReadError::Entry {
            entry: format!("#{i}"),
            message: e.to_string(),
        })?;
        let path = f
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("#{i}"));
        let bad = |message: String| ReadError::Entry {
            entry: path.clone(),
            message,
        };
        if f.compression() != CompressionMethod::Stored {
            return Err(bad(format!(
                "compressed with {:?}; a bundle stores its entries",
                f.compression()
            )));
        }
        if f.size() > bytes.len() as u64 {
            return Err(bad("declares a size larger than the whole file".into()));
        }
        let mut data = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut data).map_err(|e| {
            bad(format!(
                "its bytes do not match the CRC-32 or the size in the zip headers ({e}): the entry was altered"
            ))
        })?;
        drop(f);
        out.push(Entry { path, bytes: data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry {
                path: "a.txt".into(),
                bytes: b"hello".to_vec(),
            },
            Entry {
                path: "dir/b.eml".into(),
                bytes: vec![0, 1, 2, 255],
            },
        ]
    }

    #[test]
    fn writing_is_deterministic_and_round_trips() {
        let a = write(&sample()).unwrap();
        let b = write(&sample()).unwrap();
        assert_eq!(a, b, "the same entries give the same bytes");
        assert_eq!(read(&a).unwrap(), sample());
    }

    #[test]
    fn a_flipped_data_byte_is_reported_against_its_entry() {
        let z = write(&sample()).unwrap();
        let at = z.windows(5).position(|w| w == b"hello").unwrap();
        let mut bad = z.clone();
        bad[at] ^= 1;
        match read(&bad) {
            Err(ReadError::Entry { entry, message }) => {
                assert_eq!(entry, "a.txt");
                assert!(message.contains("altered"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_a_zip_and_compressed_entries_are_refused() {
        assert!(matches!(read(b"plain text"), Err(ReadError::NotZip(_))));
        assert!(matches!(read(b""), Err(ReadError::NotZip(_))));
    }
}

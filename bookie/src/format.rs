//! On-disk framing shared by journal files and entry log files.
//!
//! Every file starts with a 32-byte header:
//! `magic [8] | format version u32 | reserved u32 | file id u64 | reserved u32 | crc32c u32`
//! (the CRC covers the first 28 bytes). Every record is
//! `record magic u32 | body length u32 | crc32c u32 | body`, all little-endian, where the
//! CRC covers the length field and the body. The record magic lets recovery tell "a torn
//! last record" from "a damaged record followed by good ones".
//!
//! Invariants: a length read from disk is checked against [`MAX_RECORD_BODY`] before any
//! allocation; nothing here trusts a byte it has not checksummed.

/// Header size of every journal and entry log file.
pub const FILE_HEADER_LEN: usize = 32;
/// Size of a record's frame (magic, length, CRC) before its body.
pub const RECORD_HEADER_LEN: usize = 12;
/// The largest record body any Strata file may hold: 64 MiB. Entry payloads are limited
/// far below this by configuration; the bound exists so a corrupt length can never make us
/// allocate gigabytes.
pub const MAX_RECORD_BODY: usize = 64 << 20;
/// Current version of both file formats.
pub const FORMAT_VERSION: u32 = 1;

/// What kind of file a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Journal,
    EntryLog,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Journal => b"STRJRNL\0",
            FileKind::EntryLog => b"STRELOG\0",
        }
    }

    /// The magic that starts every record of this kind of file.
    pub fn record_magic(self) -> u32 {
        match self {
            FileKind::Journal => 0x4A52_5453,  // "STRJ" little-endian
            FileKind::EntryLog => 0x4C52_5453, // "STRL" little-endian
        }
    }
}

/// Encodes the header of a new file.
pub fn encode_file_header(kind: FileKind, file_id: u64) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&file_id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header and returns the file id it names.
pub fn decode_file_header(kind: FileKind, h: &[u8]) -> Result<u64, String> {
    if h.len() < FILE_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than its {FILE_HEADER_LEN}-byte header",
            h.len()
        ));
    }
    if &h[..8] != kind.magic() {
        return Err(format!("bad magic {:?}, not a {kind:?} file", &h[..8]));
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&h[..28]) {
        return Err("header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        ));
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")))
}

/// Builds a record frame for a body made of a fixed part and a payload (kept apart so the
/// payload is written straight from its buffer).
pub fn encode_record_frame(kind: FileKind, fixed: &[u8], payload: &[u8]) -> [u8; RECORD_HEADER_LEN] {
    let len = (fixed.len() + payload.len()) as u32;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&len_bytes), fixed), payload);
    let mut f = [0u8; RECORD_HEADER_LEN];
    f[..4].copy_from_slice(&kind.record_magic().to_le_bytes());
    f[4..8].copy_from_slice(&len_bytes);
    f[8..12].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Why a record could not be read at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The file ends inside the record (or its frame).
    Truncated { needed: usize, available: usize },
    /// The record does not start with the record magic (zeros from preallocation, or garbage).
    BadMagic(u32),
    /// The length field is impossible.
    BadLength(usize),
    /// The CRC does not match.
    BadChecksum,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated { needed, available } => {
                write!(f, "record truncated ({needed} bytes needed, {available} available)")
            }
            RecordError::BadMagic(m) => write!(f, "no record magic (found {m:#010x})"),
            RecordError::BadLength(l) => {
                write!(f, "impossible record length {l} (max {MAX_RECORD_BODY})")
            }
            RecordError::BadChecksum => f.write_str("record checksum mismatch"),
        }
    }
}

/// Parses the record at the start of `buf`; returns the body's range within `buf` and the
/// total record length.
pub fn parse_record(kind: FileKind, buf: &[u8]) -> Result<(std::ops::Range<usize>, usize), RecordError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    }
    let magic = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
    if magic != kind.record_magic() {
        return Err(RecordError::BadMagic(magic));
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    if len > MAX_RECORD_BODY {
        return Err(RecordError::BadLength(len));
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let crc = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    let body = &buf[RECORD_HEADER_LEN..total];
    if crc != crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), body) {
        return Err(RecordError::BadChecksum);
    }
    Ok((RECORD_HEADER_LEN..total, total))
}

/// Finds the first offset after `from` where a complete, valid record starts, if any.
/// Used to decide whether damage is a torn tail (nothing valid after it) or corruption in
/// the middle of a file.
pub fn find_valid_record_after(kind: FileKind, buf: &[u8], from: usize) -> Option<usize> {
    let magic = kind.record_magic().to_le_bytes();
    let mut pos = from + 1;
    while pos + RECORD_HEADER_LEN <= buf.len() {
        let rel = buf[pos..].windows(4).position(|w| w == magic)?;
        pos += rel;
        if parse_record(kind, &buf[pos..]).is_ok() {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// Lists files in `dir` named `<prefix><number>.log`, as (number, path) sorted by number.
pub fn list_numbered(dir: &std::path::Path, prefix: &str) -> std::io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if let Some(id) = name
            .to_string_lossy()
            .strip_prefix(prefix)
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((id, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Little-endian field reader over a checksummed record body.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err(format!(
                "record body too short: needed {n} more bytes at byte {}",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// Position after the fields read so far (where a trailing payload starts).
    pub fn position(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: FileKind, fixed: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = encode_record_frame(kind, fixed, payload).to_vec();
        v.extend_from_slice(fixed);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_file_header(FileKind::Journal, 42);
        assert_eq!(decode_file_header(FileKind::Journal, &h), Ok(42));
        assert!(
            decode_file_header(FileKind::EntryLog, &h)
                .unwrap_err()
                .contains("magic")
        );
        let mut bad = h;
        bad[17] ^= 1;
        assert!(
            decode_file_header(FileKind::Journal, &bad)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            decode_file_header(FileKind::Journal, &h[..10])
                .unwrap_err()
                .contains("shorter")
        );
    }

    #[test]
    fn record_round_trip_and_every_kind_of_damage() {
        let r = record(FileKind::Journal, b"fixed", b"payload");
        let (body, total) = parse_record(FileKind::Journal, &r).unwrap();
        assert_eq!(&r[body], b"fixedpayload");
        assert_eq!(total, r.len());
        // Truncated anywhere.
        for cut in 0..r.len() {
            assert!(matches!(
                parse_record(FileKind::Journal, &r[..cut]),
                Err(RecordError::Truncated { .. })
            ));
        }
        // Any flipped bit is caught.
        for i in 0..r.len() {
            let mut d = r.clone();
            d[i] ^= 0x10;
            assert!(parse_record(FileKind::Journal, &d).is_err(), "flip at {i} undetected");
        }
        // Impossible lengths are refused before allocating.
        let mut huge = r.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_record(FileKind::Journal, &huge),
            Err(RecordError::BadLength(u32::MAX as usize))
        );
    }

    #[test]
    fn finds_valid_records_after_damage() {
        let mut buf = record(FileKind::Journal, b"a", b"1");
        let second = buf.len();
        buf.extend(record(FileKind::Journal, b"b", b"2"));
        buf[5] ^= 0xff; // damage the first record's length
        assert_eq!(find_valid_record_after(FileKind::Journal, &buf, 0), Some(second));
        assert_eq!(find_valid_record_after(FileKind::Journal, &buf, second), None);
    }
}

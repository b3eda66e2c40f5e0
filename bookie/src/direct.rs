//! Appending to a file with `O_DIRECT`, bypassing the page cache.
//!
//! Why: the bookie writes every byte twice (journal, then entry log). Through the page
//! cache each write is a kernel copy plus page allocation and writeback; profiling B1 showed
//! those copies using most of a core. Direct I/O moves the data from our aligned buffer to
//! the device instead.
//!
//! How: data is staged in a block-aligned buffer; a write covers whole 4 KiB blocks, the
//! last one zero-padded. The partial last block stays in the buffer and is written again,
//! completed, by the next write — so the file's bytes past the logical end are zeros, which
//! readers treat as a clean end. Rewriting that block rewrites the same bytes for everything
//! already there, so a torn rewrite cannot change data that was synced before.
//!
//! Falls back to ordinary buffered writes where the file system refuses `O_DIRECT`
//! (tmpfs, some overlay set-ups).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct writes (buffer address, file offset and length).
pub const BLOCK: usize = 4096;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// An append-only file written through an aligned staging buffer.
pub struct DirectAppender {
    file: File,
    direct: bool,
    storage: Vec<u8>,
    /// Offset in `storage` where the aligned buffer starts.
    start: usize,
    cap: usize,
    /// Bytes staged in the buffer.
    len: usize,
    /// File offset of the buffer's first byte (block-aligned with direct I/O).
    buf_pos: u64,
}

impl DirectAppender {
    /// Creates a new file (it must not exist) with a staging buffer of `cap` bytes.
    pub fn create(path: &Path, cap: usize) -> io::Result<Self> {
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.create_new(true).write(true);
            if direct {
                o.custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32);
            }
            o.open(path)
        };
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                let _ = std::fs::remove_file(path);
                tracing::debug!(file = %path.display(), "O_DIRECT not supported here; using buffered writes");
                (open(false)?, false)
            }
            Err(e) => return Err(e),
        };
        let mut me = Self {
            file,
            direct,
            storage: Vec::new(),
            start: 0,
            cap: 0,
            len: 0,
            buf_pos: 0,
        };
        me.reserve(cap);
        Ok(me)
    }

    /// Grows the buffer so it can stage `cap` bytes.
    fn reserve(&mut self, cap: usize) {
        let cap = round_up(cap.max(BLOCK));
        if cap <= self.cap {
            return;
        }
        let mut storage = vec![0u8; cap + BLOCK];
        let start = storage.as_ptr().align_offset(BLOCK);
        storage[start..start + self.len].copy_from_slice(&self.storage[self.start..self.start + self.len]);
        self.storage = storage;
        self.start = start;
        self.cap = cap;
    }

    /// Logical size of the file: everything appended so far.
    pub fn position(&self) -> u64 {
        self.buf_pos + self.len as u64
    }

    /// Stages `parts` (one record) for writing; writes the buffer out first if it is full.
    pub fn append(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.len + total > self.cap {
            self.write_out()?;
            if self.len + total > self.cap {
                self.reserve(self.len + total);
            }
        }
        for p in parts {
            let at = self.start + self.len;
            self.storage[at..at + p.len()].copy_from_slice(p);
            self.len += p.len();
        }
        Ok(())
    }

    /// Writes everything staged to the file (not yet synced).
    pub fn write_out(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        if !self.direct {
            self.file
                .write_all_at(&self.storage[self.start..self.start + self.len], self.buf_pos)?;
            self.buf_pos += self.len as u64;
            self.len = 0;
            return Ok(());
        }
        let padded = round_up(self.len);
        self.storage[self.start + self.len..self.start + padded].fill(0);
        self.file
            .write_all_at(&self.storage[self.start..self.start + padded], self.buf_pos)?;
        // Keep the partial last block: the next write completes and rewrites it.
        let full = self.len / BLOCK * BLOCK;
        self.storage
            .copy_within(self.start + full..self.start + self.len, self.start);
        self.buf_pos += full as u64;
        self.len -= full;
        Ok(())
    }

    /// Writes everything staged and makes it durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_exactly_with_a_zero_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut a = DirectAppender::create(&p, 8192).unwrap();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let rec = vec![(i % 251) as u8 + 1; (i as usize * 37) % 5000 + 1];
            a.append(&[&i.to_le_bytes(), &rec]).unwrap();
            expect.extend_from_slice(&i.to_le_bytes());
            expect.extend_from_slice(&rec);
            if i % 7 == 0 {
                a.sync().unwrap();
            }
        }
        // A record larger than the buffer grows it.
        let big = vec![9u8; 20_000];
        a.append(&[&big]).unwrap();
        expect.extend_from_slice(&big);
        a.sync().unwrap();
        assert_eq!(a.position(), expect.len() as u64);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(&data[..expect.len()], &expect[..]);
        assert!(data[expect.len()..].iter().all(|b| *b == 0));
        assert!(data.len() - expect.len() < BLOCK);
    }
}

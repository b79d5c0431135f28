//! The hash of every offset the verifier has seen, kept in an anonymous temporary file rather
//! than in memory: a copy of the log may hold any number of events, and only a redelivered
//! or replayed one needs an earlier hash back.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use super::Hash;

pub(super) struct Index {
    file: BufWriter<File>,
    /// The offset of the first hash in the file.
    first: u64,
    /// Hashes written: the file covers `first..first + len`.
    len: u64,
}

impl Index {
    pub(super) fn new(first: u64) -> io::Result<Index> {
        Ok(Index {
            file: BufWriter::with_capacity(1 << 16, tempfile::tempfile()?),
            first,
            len: 0,
        })
    }

    /// Keep `hash` for `offset`, which is past every offset kept so far; offsets skipped in
    /// between (a gap) keep nothing.
    pub(super) fn push(&mut self, offset: u64, hash: &Hash) -> io::Result<()> {
        while self.first + self.len < offset {
            self.file.write_all(&[0; 32])?;
            self.len += 1;
        }
        self.file.write_all(hash)?;
        self.len += 1;
        Ok(())
    }

    /// The hash kept for `offset`; `None` for one never kept (before the first, or a gap).
    pub(super) fn get(&mut self, offset: u64) -> io::Result<Option<Hash>> {
        if offset < self.first || offset >= self.first + self.len {
            return Ok(None);
        }
        self.file.flush()?;
        let mut hash = [0; 32];
        self.file
            .get_ref()
            .read_exact_at(&mut hash, (offset - self.first) * 32)?;
        Ok((hash != [0; 32]).then_some(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_come_back_by_offset_and_gaps_hold_none() {
        let mut index = Index::new(10).unwrap();
        index.push(10, &[1; 32]).unwrap();
        index.push(13, &[3; 32]).unwrap();
        assert_eq!(index.get(10).unwrap(), Some([1; 32]));
        assert_eq!(index.get(11).unwrap(), None);
        assert_eq!(index.get(13).unwrap(), Some([3; 32]));
        assert_eq!(index.get(9).unwrap(), None);
        assert_eq!(index.get(14).unwrap(), None);
    }
}

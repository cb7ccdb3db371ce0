//! Writing a stream of pieces to a file while SHA-256 runs beside it: the
//! receiving end of a verified transfer. The disk and the digest each get a
//! thread, so neither waits for the other; [`Gather`] turns a network's
//! small frames into pieces worth a thread's wake-up.

use std::io::Write;
use std::sync::mpsc::sync_channel;

use sha2::{Digest, Sha256};

/// What [`write_hashing`] wrote.
#[derive(Debug)]
pub struct Written {
    /// Bytes that reached the writer.
    pub bytes: u64,
    /// The digest of the bytes before plus exactly those written; `None`
    /// when a write failed part-way (then which bytes of the failed piece
    /// reached the file is unknown, and the digest must be taken again
    /// from the file).
    pub hasher: Option<Sha256>,
    /// The write that failed, if one did.
    pub error: Option<std::io::Error>,
}

/// Writes each piece of `pieces` to `out`, in order, feeding the same
/// pieces to `hasher` on a second thread. Pieces are handed over, not
/// copied: a `bytes::Bytes` clone is a reference count.
pub fn write_hashing<W, T>(out: &mut W, hasher: Sha256, pieces: impl Iterator<Item = T>) -> Written
where
    W: Write,
    T: AsRef<[u8]> + Clone + Send,
{
    std::thread::scope(|threads| {
        let (tx, rx) = sync_channel::<T>(16);
        let digest = threads.spawn(move || {
            let mut hasher = hasher;
            for piece in rx {
                hasher.update(piece.as_ref());
            }
            hasher
        });
        let (mut bytes, mut error) = (0u64, None);
        for piece in pieces {
            let _ = tx.send(piece.clone());
            if let Err(e) = out.write_all(piece.as_ref()) {
                error = Some(e);
                break;
            }
            bytes += piece.as_ref().len() as u64;
        }
        drop(tx);
        let hasher = digest.join().ok().filter(|_| error.is_none());
        Written { bytes, hasher, error }
    })
}

/// Gathers the small pieces a network hands over into pieces of about
/// `size` bytes, so the thread that writes them is woken per piece, not per
/// frame.
#[derive(Debug)]
pub struct Gather {
    piece: Vec<u8>,
    size: usize,
}

impl Gather {
    /// Pieces of `size` bytes (the last may be shorter).
    pub fn new(size: usize) -> Gather {
        Gather {
            piece: Vec::with_capacity(size),
            size,
        }
    }

    /// Adds `bytes`; a full piece when there is one.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.piece.extend_from_slice(bytes);
        (self.piece.len() >= self.size)
            .then(|| std::mem::replace(&mut self.piece, Vec::with_capacity(self.size)))
    }

    /// What is left, if anything.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.piece.is_empty()).then_some(self.piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `room` bytes and then fails.
    struct Full {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_digest_covers_what_came_before_and_every_piece() {
        let pieces: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let mut before = Sha256::new();
        before.update(b"earlier chunks");
        let mut out = Vec::new();
        let written = write_hashing(&mut out, before, pieces.iter().cloned());
        assert!(written.error.is_none());
        assert_eq!(written.bytes, out.len() as u64);
        let mut whole = Sha256::new();
        whole.update(b"earlier chunks");
        whole.update(&out);
        assert_eq!(written.hasher.unwrap().finalize(), whole.finalize());
        assert_eq!(out, pieces.concat());
    }

    #[test]
    fn gathered_pieces_keep_every_byte_in_order() {
        let mut gather = Gather::new(100);
        let mut out = Vec::new();
        for i in 0..37u8 {
            out.extend(gather.push(&[i; 9]));
        }
        assert!(out.iter().all(|p| p.len() >= 100 && p.len() < 109));
        out.extend(gather.finish());
        let expected: Vec<u8> = (0..37u8).flat_map(|i| [i; 9]).collect();
        assert_eq!(out.concat(), expected);
    }

    #[test]
    fn a_failed_write_leaves_no_digest_to_trust() {
        let mut out = Full {
            room: 2500,
            got: Vec::new(),
        };
        let pieces = vec![vec![1u8; 1000], vec![2u8; 1000], vec![3u8; 1000], vec![4u8; 1000]];
        let written = write_hashing(&mut out, Sha256::new(), pieces.into_iter());
        assert_eq!(written.error.unwrap().to_string(), "disk full");
        assert_eq!(written.bytes, 2000, "the pieces written whole");
        assert!(written.hasher.is_none());
        assert_eq!(out.got.len(), 2500, "part of the third piece reached the writer");
    }
}

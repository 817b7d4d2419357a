//! The audit log's journal: what makes a batch of records durable before its calls are
//! answered, for the price of one write.
//!
//! Appending to the log and flushing it costs a filesystem journal commit on every batch,
//! because the file grows (about 200 µs here). The journal is a fixed-size file, filled with
//! zeros once, that each batch overwrites in place with `O_DSYNC` and, where the filesystem
//! allows it, `O_DIRECT`: its blocks already exist, so the write alone is durable (about 100 µs
//! here; 120 µs through the page cache). The log itself is appended without a flush and flushed in
//! bulk: before the journal wraps, at every checkpoint written on request, at rotation and on
//! close. After a crash, the next start appends to the log the acknowledged records the journal
//! holds beyond the log's last complete record; the log stays plain JSON lines for every reader.
//!
//! A frame is `ALJRNL01`, the payload's length (u32, little-endian), the payload's sha256, then
//! the payload: the batch's log lines exactly as appended to the log, then zeros up to the next
//! 4 KiB boundary. A torn frame fails its checksum and was never acknowledged. Frames start on
//! 4 KiB boundaries, so that writing one never rewrites a block of another.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const FILE: &str = "journal";
const MAGIC: &[u8; 8] = b"ALJRNL01";
/// Magic, payload length, payload sha256.
pub const HEADER: usize = 8 + 4 + 32;
/// The journal's size. A batch larger than half of it is written to the log and flushed
/// directly instead.
const CAPACITY: u64 = 2 << 20;
/// Frames start at multiples of this, and `O_DIRECT` writes are made of such blocks.
const ALIGN: usize = 4096;

fn aligned(offset: u64) -> u64 {
    offset.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// The length on disk of a frame holding `payload` bytes.
fn frame_len(payload: usize) -> u64 {
    aligned((HEADER + payload) as u64)
}

/// Memory for one frame, aligned as `O_DIRECT` requires.
#[derive(Default)]
struct FrameBuf {
    blocks: Vec<Block>,
}

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

impl FrameBuf {
    /// The first `len` bytes (a multiple of [`ALIGN`]), zeroed, growing the buffer as needed.
    fn zeroed(&mut self, len: usize) -> &mut [u8] {
        debug_assert!(len.is_multiple_of(ALIGN));
        let blocks = len / ALIGN;
        if self.blocks.len() < blocks {
            self.blocks.resize(blocks, Block([0; ALIGN]));
        }
        let bytes = self.bytes(blocks);
        bytes.fill(0);
        bytes
    }

    fn bytes(&mut self, blocks: usize) -> &mut [u8] {
        let blocks = &mut self.blocks[..blocks];
        // SAFETY: `Block` is a `repr(C)` array of bytes with no padding, so `blocks` is
        // `blocks.len() * ALIGN` initialised, contiguous bytes, borrowed mutably for as long as
        // the slice lives.
        unsafe {
            std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), blocks.len() * ALIGN)
        }
    }
}

pub struct Journal {
    /// Opened for durable writes: `O_DSYNC`, and from the first erasure on `O_DIRECT` too where
    /// the filesystem takes it (see [`Journal::invalidate`]).
    file: File,
    /// The journal's path while `O_DIRECT` is still to be tried.
    try_direct: Option<PathBuf>,
    /// The same file through the page cache, for reading frames back.
    reader: File,
    /// Where the next frame goes.
    offset: u64,
    frame: FrameBuf,
}

impl Journal {
    /// Open the journal in `dir`, creating and zero-filling it when it is missing or short.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let path = dir.join(FILE);
        let reader = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = reader.metadata()?.len();
        if len < CAPACITY {
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < CAPACITY {
                let n = (CAPACITY - at).min(zeros.len() as u64) as usize;
                reader.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            reader.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&path)?;
        Ok(Journal {
            file,
            try_direct: Some(path),
            reader,
            offset: 0,
            frame: FrameBuf::default(),
        })
    }

    /// Whether a frame holding `payload` bytes can go through the journal at all.
    pub fn fits(payload: usize) -> bool {
        frame_len(payload) <= CAPACITY / 2
    }

    /// Whether the frame holding `payload` bytes must start over at the beginning,
    /// overwriting frames: the caller first flushes the log, so that they are no longer
    /// needed, then calls [`Journal::reset`].
    pub fn must_wrap(&self, payload: usize) -> bool {
        self.offset + frame_len(payload) > CAPACITY
    }

    /// Write the frame holding `payload`; durable when this returns.
    pub fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = frame_len(payload.len());
        let frame = self.frame.zeroed(len as usize);
        frame[..8].copy_from_slice(MAGIC);
        frame[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        frame[12..HEADER].copy_from_slice(&Sha256::digest(payload));
        frame[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        self.file.write_all_at(frame, self.offset)?;
        self.offset += len;
        Ok(())
    }

    /// Everything journaled so far is in the flushed log: start over.
    pub fn reset(&mut self) {
        self.offset = 0;
    }

    /// Everything journaled so far is in the flushed log, and the frames must not come back at
    /// the next start (a clean stop, a start's own recovery): the first frame's header is
    /// erased, which ends every later scan at once.
    ///
    /// The first erasure (a start's, after its recovery) is also where `O_DIRECT` is tried:
    /// block 0 no longer matters then, so a write the filesystem refuses or tears costs nothing.
    pub fn invalidate(&mut self) -> std::io::Result<()> {
        let block = self.frame.zeroed(ALIGN);
        if let Some(path) = self.try_direct.take()
            && let Some(direct) = open_direct(&path, block)?
        {
            self.file = direct;
        } else {
            self.file.write_all_at(block, 0)?;
        }
        self.offset = 0;
        Ok(())
    }

    /// The payloads of the intact frames from the start, in file order, up to the first
    /// damaged or empty one. Frames left from before the last wrap may follow the newest ones;
    /// their records are older than the log's last record.
    pub fn frames(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut bytes = vec![0u8; CAPACITY as usize];
        self.reader.read_exact_at(&mut bytes, 0)?;
        let mut frames = Vec::new();
        let mut at = 0usize;
        while at + HEADER <= bytes.len() && &bytes[at..at + 8] == MAGIC {
            let len =
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
            let start = at + HEADER;
            let Some(payload) = bytes.get(start..start + len) else {
                break;
            };
            if Sha256::digest(payload).as_slice() != &bytes[at + 12..at + HEADER] {
                break;
            }
            frames.push(payload.to_vec());
            at += frame_len(len) as usize;
        }
        Ok(frames)
    }
}

/// The journal at `path` opened with `O_DIRECT` and `O_DSYNC`, `block` written at offset 0
/// through it; `None` where the filesystem does not take `O_DIRECT` (tmpfs before Linux 6.6,
/// some network and FUSE filesystems), which the open or the first write says.
fn open_direct(path: &Path, block: &[u8]) -> std::io::Result<Option<File>> {
    let refused = |e: &std::io::Error| {
        let refused = matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP));
        if refused {
            tracing::info!(
                "the audit journal's filesystem does not take O_DIRECT ({e}); writing through the page cache"
            );
        }
        refused
    };
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC | libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if refused(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.write_all_at(block, 0) {
        Ok(()) => Ok(Some(file)),
        Err(e) if refused(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(j: &mut Journal, payload: &[u8]) -> u64 {
        let at = j.offset;
        assert!(!j.must_wrap(payload.len()));
        j.write(payload).unwrap();
        at
    }

    #[test]
    fn frames_round_trip_and_a_torn_frame_ends_the_scan() {
        let dir = std::env::temp_dir().join(format!("airlock-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut j = Journal::open(&dir).unwrap();
        // As a start does: erase, which also switches to O_DIRECT where it can.
        j.invalidate().unwrap();
        assert!(j.try_direct.is_none());
        write(&mut j, b"one\n");
        write(&mut j, b"two\nthree\n");
        assert_eq!(j.offset, 2 * ALIGN as u64);
        assert_eq!(
            j.frames().unwrap(),
            vec![b"one\n".to_vec(), b"two\nthree\n".to_vec()]
        );
        // A third frame torn mid-payload: the scan stops before it.
        let third = write(&mut j, b"four\n");
        j.reader
            .write_all_at(b"X", third + HEADER as u64 + 1)
            .unwrap();
        j.reader.sync_all().unwrap();
        assert_eq!(j.frames().unwrap().len(), 2);
        // A frame larger than a block takes the blocks it needs.
        let big = vec![b'x'; ALIGN + 10];
        let at = write(&mut j, &big);
        assert_eq!(j.offset, at + 2 * ALIGN as u64);
        // After a wrap, the newest frames come first.
        j.reset();
        write(&mut j, b"five\n");
        assert_eq!(j.frames().unwrap()[0], b"five\n".to_vec());
        assert!(Journal::fits(512 << 10) && !Journal::fits(2 << 20));
        // Full: the caller must start over.
        j.offset = CAPACITY - ALIGN as u64;
        assert!(j.must_wrap(ALIGN) && !j.must_wrap(ALIGN - HEADER));
        // Invalidated: nothing comes back.
        j.invalidate().unwrap();
        assert!(j.frames().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

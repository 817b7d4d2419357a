//! The audit log's journal: what makes a batch of records durable before its calls are
//! answered, for the price of one write.
//!
//! Appending to the log and flushing it costs a filesystem journal commit on every batch,
//! because the file grows (about 200 µs here). The journal is a fixed-size file, filled with
//! zeros once, that each batch overwrites in place with `O_DSYNC`: its blocks already exist,
//! so the write alone is durable (about 120 µs here). The log itself is appended without a
//! flush and flushed in bulk: before the journal wraps, at every checkpoint written on request,
//! at rotation and on close. After a crash, the next start appends to the log the acknowledged
//! records the journal holds beyond the log's last complete record; the log stays plain JSON
//! lines for every reader.
//!
//! A frame is `ALJRNL01`, the payload's length (u32, little-endian), the payload's sha256, then
//! the payload: the batch's log lines exactly as appended to the log. A torn frame fails its
//! checksum and was never acknowledged. Frames start on 4 KiB boundaries, so that writing one
//! never rewrites a block of the acknowledged frame before it.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const FILE: &str = "journal";
const MAGIC: &[u8; 8] = b"ALJRNL01";
/// Magic, payload length, payload sha256.
pub const HEADER: usize = 8 + 4 + 32;
/// The journal's size. A batch larger than half of it is written to the log and flushed
/// directly instead.
const CAPACITY: u64 = 2 << 20;
/// Frames start at multiples of this.
const ALIGN: u64 = 4096;

fn aligned(offset: u64) -> u64 {
    offset.div_ceil(ALIGN) * ALIGN
}

pub struct Journal {
    file: File,
    /// Where the next frame goes.
    offset: u64,
}

impl Journal {
    /// Open the journal in `dir`, creating and zero-filling it when it is missing or short.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_DSYNC)
            .open(dir.join(FILE))?;
        let len = file.metadata()?.len();
        if len < CAPACITY {
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < CAPACITY {
                let n = (CAPACITY - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(Journal { file, offset: 0 })
    }

    /// Start a frame in `buf` (cleared): room for the header, filled in by [`Journal::write`].
    pub fn begin(buf: &mut Vec<u8>) {
        buf.clear();
        buf.resize(HEADER, 0);
    }

    /// Whether a frame holding `payload` bytes can go through the journal at all.
    pub fn fits(payload: usize) -> bool {
        (HEADER + payload) as u64 <= CAPACITY / 2
    }

    /// Whether the frame must start over at the beginning, overwriting frames: the caller
    /// first flushes the log, so that they are no longer needed.
    pub fn must_wrap(&self, frame: usize) -> bool {
        self.offset + frame as u64 > CAPACITY
    }

    /// Everything journaled so far is in the flushed log: start over.
    pub fn reset(&mut self) {
        self.offset = 0;
    }

    /// Everything journaled so far is in the flushed log, and the frames must not come back at
    /// the next start (a clean stop, a start's own recovery): the first frame's header is
    /// erased, which ends every later scan at once.
    pub fn invalidate(&mut self) -> std::io::Result<()> {
        self.file.write_all_at(&[0u8; HEADER], 0)?;
        self.offset = 0;
        Ok(())
    }

    /// Write the frame `buf` (begun with [`Journal::begin`]); durable when this returns.
    pub fn write(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let (header, payload) = buf.split_at_mut(HEADER);
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[12..].copy_from_slice(&Sha256::digest(&*payload));
        self.file.write_all_at(buf, self.offset)?;
        self.offset = aligned(self.offset + buf.len() as u64);
        Ok(())
    }

    /// The payloads of the intact frames from the start, in file order, up to the first
    /// damaged or empty one. Frames left from before the last wrap may follow the newest ones;
    /// their records are older than the log's last record.
    pub fn frames(&self) -> std::io::Result<Vec<Vec<u8>>> {
        let mut bytes = vec![0u8; CAPACITY as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
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
            at = aligned((start + len) as u64) as usize;
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_frame_ends_the_scan() {
        let dir = std::env::temp_dir().join(format!("airlock-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut j = Journal::open(&dir).unwrap();
        let mut buf = Vec::new();
        for payload in [&b"one\n"[..], b"two\nthree\n"] {
            Journal::begin(&mut buf);
            buf.extend_from_slice(payload);
            j.write(&mut buf).unwrap();
        }
        let end = j.offset;
        assert_eq!(end, 2 * ALIGN);
        assert_eq!(
            j.frames().unwrap(),
            vec![b"one\n".to_vec(), b"two\nthree\n".to_vec()]
        );
        // A third frame torn mid-payload: the scan stops before it.
        Journal::begin(&mut buf);
        buf.extend_from_slice(b"four\n");
        j.write(&mut buf).unwrap();
        j.file.write_all_at(b"X", end + HEADER as u64 + 1).unwrap();
        assert_eq!(j.frames().unwrap().len(), 2);
        // After a wrap, the newest frames come first.
        j.reset();
        Journal::begin(&mut buf);
        buf.extend_from_slice(b"five\n");
        j.write(&mut buf).unwrap();
        assert_eq!(j.frames().unwrap()[0], b"five\n".to_vec());
        assert!(Journal::fits(512 << 10) && !Journal::fits(2 << 20));
        // Invalidated: nothing comes back.
        j.invalidate().unwrap();
        assert!(j.frames().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

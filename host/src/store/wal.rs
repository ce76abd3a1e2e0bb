//! The head's write-ahead log: append-only segment files outside sled.
//!
//! Every group commit appends its head records to the current segment and, with
//! `fsync_on_commit`, calls fdatasync before the appends are acknowledged. Compaction starts
//! a new segment before it freezes the head, and deletes a closed segment once every record
//! in it has reached a chunk. Keeping this churn out of sled matters for size. sled 0.34
//! rewrites its pages as they change and never shrinks its file. Head records written to
//! sled and deleted minutes later left several bytes of sled log per sample behind.
//!
//! File `wal/<index>.log`, a sequence of records, integers big-endian:
//!
//! | field | size |
//! |---|---|
//! | payload length | `u32` |
//! | CRC-32 of the payload | `u32` |
//! | payload: sequence number `u64`, then the head record (see [`super::head`]) | length |
//!
//! A crash can leave a torn record at the end of the last segment. Replay stops at the first
//! record that is cut short or fails its checksum; nothing after it was acknowledged.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::head::{decode_record, encode_record};
use super::keys::{read_u32, read_u64};
use super::sample::Sample;

const EXTENSION: &str = "log";
const RECORD_HEADER_LEN: usize = 8;

/// A closed segment and the highest sequence number it holds.
struct Closed {
    path: PathBuf,
    max_seq: Option<u64>,
}

/// The open segment and the closed ones that still hold uncompacted records.
pub(crate) struct Wal {
    dir: PathBuf,
    fsync: bool,
    current: File,
    current_path: PathBuf,
    current_index: u64,
    current_max_seq: Option<u64>,
    /// Flag set when a write or fdatasync of the current segment failed. The segment may then
    /// end in a partial record, where replay stops, so the next append starts a new segment.
    failed: bool,
    closed: Vec<Closed>,
}

/// Head records read back at open, in sequence order.
pub(crate) type Replayed = Vec<(u64, Vec<(u64, Sample)>)>;

impl Wal {
    /// Opens the log in `dir`, creating it when missing, and returns it with every record of
    /// the existing segments. New records go to a new segment.
    pub(crate) fn open(dir: PathBuf, fsync: bool) -> Result<(Self, Replayed), StoreError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| io(format!("creating `{}`", dir.display()), source))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        let listing = std::fs::read_dir(&dir)
            .map_err(|source| io(format!("listing `{}`", dir.display()), source))?;
        for entry in listing {
            let path = entry
                .map_err(|source| io(format!("listing `{}`", dir.display()), source))?
                .path();
            let index = path
                .extension()
                .filter(|e| *e == EXTENSION)
                .and_then(|_| path.file_stem())
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<u64>().ok());
            if let Some(index) = index {
                segments.push((index, path));
            }
        }
        segments.sort();

        let mut replayed = Replayed::new();
        let mut closed = Vec::with_capacity(segments.len());
        for (_, path) in &segments {
            let before = replayed.len();
            read_segment(path, &mut replayed)?;
            closed.push(Closed {
                path: path.clone(),
                max_seq: replayed[before..].iter().map(|(seq, _)| *seq).max(),
            });
        }
        replayed.sort_by_key(|(seq, _)| *seq);

        let current_index = segments.last().map_or(1, |(index, _)| index + 1);
        let (current, current_path) = create_segment(&dir, current_index, fsync)?;
        let wal = Self {
            dir,
            fsync,
            current,
            current_path,
            current_index,
            current_max_seq: None,
            failed: false,
            closed,
        };
        Ok((wal, replayed))
    }

    /// Appends `records` (sequence number and entries) to the current segment and, with
    /// fsync on, makes them durable before returning.
    pub(crate) fn append(&mut self, records: &[(u64, &[(u64, Sample)])]) -> Result<(), StoreError> {
        if self.failed {
            self.start_segment()?;
            self.failed = false;
        }
        let mut buffer = Vec::new();
        for (seq, entries) in records {
            let mut payload = Vec::with_capacity(8 + entries.len() * 24);
            payload.extend_from_slice(&seq.to_be_bytes());
            payload.extend_from_slice(&encode_record(entries));
            let len = u32::try_from(payload.len())
                .map_err(|_| super::error::corrupt("head", "record larger than 4 GiB"))?;
            buffer.extend_from_slice(&len.to_be_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
            buffer.extend_from_slice(&payload);
            self.current_max_seq = self.current_max_seq.max(Some(*seq));
        }
        let path = &self.current_path;
        let written = self
            .current
            .write_all(&buffer)
            .map_err(|source| io(format!("appending to `{}`", path.display()), source))
            .and_then(|()| {
                if !self.fsync {
                    return Ok(());
                }
                // Not retried: after a failed fdatasync Linux may report later ones as
                // successful for pages it has already dropped.
                self.current
                    .sync_data()
                    .map_err(|source| io(format!("fdatasync of `{}`", path.display()), source))
            });
        self.failed = written.is_err();
        written
    }

    /// Closes the current segment and starts the next one.
    pub(crate) fn rotate(&mut self) -> Result<(), StoreError> {
        if self.current_max_seq.is_none() {
            return Ok(());
        }
        self.start_segment()
    }

    fn start_segment(&mut self) -> Result<(), StoreError> {
        let (file, path) = create_segment(&self.dir, self.current_index + 1, self.fsync)?;
        self.current_index += 1;
        let old_path = std::mem::replace(&mut self.current_path, path);
        self.current = file;
        self.closed.push(Closed {
            path: old_path,
            max_seq: self.current_max_seq.take(),
        });
        Ok(())
    }

    /// Deletes the closed segments whose records all have sequence numbers up to `seq`.
    pub(crate) fn remove_upto(&mut self, seq: Option<u64>) -> Result<(), StoreError> {
        let (obsolete, kept): (Vec<Closed>, Vec<Closed>) = std::mem::take(&mut self.closed)
            .into_iter()
            .partition(|segment| match (segment.max_seq, seq) {
                (None, _) => true,
                (Some(max), Some(upto)) => max <= upto,
                (Some(_), None) => false,
            });
        self.closed = kept;
        for segment in obsolete {
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(io(format!("removing `{}`", segment.path.display()), source));
                }
            }
        }
        Ok(())
    }

    /// Total size of the segments, in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.closed
            .iter()
            .map(|segment| segment.path.as_path())
            .chain(std::iter::once(self.current_path.as_path()))
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

/// Creates segment `index`; with fsync on, also makes its directory entry durable.
fn create_segment(dir: &Path, index: u64, fsync: bool) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(format!("{index:016}.{EXTENSION}"));
    let created = (|| {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        if fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(file)
    })();
    let file = created.map_err(|source| io(format!("creating `{}`", path.display()), source))?;
    Ok((file, path))
}

/// Appends the records of one segment to `out`, up to the first damaged one.
fn read_segment(path: &Path, out: &mut Replayed) -> Result<(), StoreError> {
    let bytes = std::fs::read(path)
        .map_err(|source| io(format!("reading `{}`", path.display()), source))?;
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (Some(len), Some(crc)) = (read_u32(rest), read_u32(rest.get(4..).unwrap_or_default()))
        else {
            break;
        };
        let len = len as usize;
        let start = at + RECORD_HEADER_LEN;
        let Some(payload) = bytes.get(start..start.saturating_add(len)) else {
            break;
        };
        let Some(seq) = read_u64(payload).filter(|_| crc32fast::hash(payload) == crc) else {
            break;
        };
        out.push((seq, decode_record(&payload[8..])?));
        at = start + len;
    }
    if at < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            discarded_bytes = bytes.len() - at,
            "head log ends in a torn record; its samples were never acknowledged"
        );
    }
    Ok(())
}

fn io(action: String, source: std::io::Error) -> StoreError {
    StoreError::Io { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64) -> Vec<(u64, Sample)> {
        (0..n)
            .map(|i| (i, Sample::new(i as i64, i as f64)))
            .collect()
    }

    #[test]
    fn replay_skips_a_torn_tail() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wal");
        let (mut wal, replayed) = Wal::open(path.clone(), false)?;
        assert!(replayed.is_empty());
        wal.append(&[(0, &entries(3)[..]), (1, &entries(1)[..])])?;
        wal.rotate()?;
        wal.append(&[(2, &entries(2)[..])])?;
        let current = wal.current_path.clone();
        drop(wal);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&current)
            .expect("open");
        file.write_all(&[0, 0, 1, 0, 9, 9]).expect("torn write");

        let (_, replayed) = Wal::open(path, false)?;
        let seqs: Vec<u64> = replayed.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert_eq!(replayed[0].1, entries(3));
        Ok(())
    }

    #[test]
    fn only_fully_compacted_segments_are_removed() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(path.clone(), false)?;
        wal.append(&[(0, &entries(1)[..])])?;
        wal.rotate()?;
        wal.append(&[(1, &entries(1)[..]), (2, &entries(1)[..])])?;
        wal.rotate()?;
        wal.remove_upto(Some(1))?;
        drop(wal);
        let (_, replayed) = Wal::open(path, false)?;
        let seqs: Vec<u64> = replayed.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        Ok(())
    }
}

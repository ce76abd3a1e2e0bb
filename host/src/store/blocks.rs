//! Sealed chunks: the chunks of a time window that no longer receives samples, written
//! once into an immutable block file outside sled.
//!
//! A log-structured store such as sled rewrites pages as they change and reuses freed space
//! without shrinking its file, so chunks kept in sled cost several times their own size on
//! disk. Windows only change while their samples arrive. So compaction seals every window
//! that ended at least one compaction interval ago. It writes the window's chunks into a
//! block file, makes the file durable, and only then deletes the chunks from sled. sled
//! keeps the head, the chunks of open windows and the series index, which stay small.
//!
//! File `blocks/<window>-<seq>.blk`, all integers big-endian:
//!
//! | part | content |
//! |---|---|
//! | header (32 bytes) | magic `UMBRABLK`, format `u32`, window start `i64`, sequence `u32`, supersedes `u32`, reserved `u32` |
//! | chunks | the chunk encodings of the store, back to back |
//! | index | per series: id `u64`, offset `u64`, length `u32`, sorted by id |
//! | footer (24 bytes) | index offset `u64`, entry count `u32`, CRC-32 of all bytes before the footer `u32`, magic `UMBRAEND` |
//!
//! Samples that arrive late for a sealed window go into a sled chunk again. They are sealed
//! into a further file of the window with the next sequence number. Queries read a window's
//! files in sequence order, so a later file wins on equal timestamps. A file that rewrites a
//! window (downsampling) sets `supersedes` to its own sequence number: files of the window
//! with a lower sequence number are obsolete, and opening the store deletes any that a crash
//! left behind.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::error::{StoreError, corrupt};
use super::keys::{decode_ts, encode_ts, read_u32, read_u64};

const HEADER_MAGIC: &[u8; 8] = b"UMBRABLK";
const FOOTER_MAGIC: &[u8; 8] = b"UMBRAEND";
const FILE_FORMAT: u32 = 1;
const HEADER_LEN: usize = 32;
const FOOTER_LEN: usize = 24;
const INDEX_ENTRY_LEN: usize = 20;
const EXTENSION: &str = "blk";

/// One block file and its index, loaded at open.
struct BlockFile {
    path: PathBuf,
    seq: u32,
    file: File,
    /// Series id → (offset, length) of its chunk.
    index: HashMap<u64, (u64, u32)>,
    chunk_bytes: u64,
    file_bytes: u64,
}

/// The contents of a block file about to be written.
pub(crate) struct NewBlock {
    /// Start of the window, in milliseconds.
    pub(crate) window_start: i64,
    /// Chunks by series id.
    pub(crate) chunks: Vec<(u64, Vec<u8>)>,
    /// Whether the file replaces every earlier file of its window.
    pub(crate) replaces_window: bool,
}

/// Every block file of the store, by window.
pub(crate) struct Blocks {
    dir: PathBuf,
    windows: BTreeMap<i64, Vec<BlockFile>>,
}

/// Size counters of the block files.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BlockStats {
    pub(crate) chunks: u64,
    pub(crate) chunk_bytes: u64,
    pub(crate) file_bytes: u64,
}

impl Blocks {
    /// Loads the index of every block file in `dir`, creating `dir` when missing. Deletes
    /// unfinished (`.tmp`) files and files superseded by a later rewrite of their window.
    pub(crate) fn open(dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| io(format!("creating `{}`", dir.display()), source))?;
        let mut windows: BTreeMap<i64, Vec<BlockFile>> = BTreeMap::new();
        let mut supersedes_by_window: HashMap<i64, u32> = HashMap::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|source| io(format!("listing `{}`", dir.display()), source))?;
        for entry in entries {
            let path = entry
                .map_err(|source| io(format!("listing `{}`", dir.display()), source))?
                .path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => {
                    // A block that was never renamed into place: its chunks are still in sled.
                    std::fs::remove_file(&path).map_err(|source| {
                        io(
                            format!("removing unfinished block `{}`", path.display()),
                            source,
                        )
                    })?;
                }
                Some(EXTENSION) => {
                    let (window_start, block, supersedes) = load(&path)?;
                    windows.entry(window_start).or_default().push(block);
                    let highest = supersedes_by_window.entry(window_start).or_default();
                    *highest = (*highest).max(supersedes);
                }
                _ => {}
            }
        }
        // Only after every file is loaded: the directory lists files in no particular order.
        for (window_start, files) in &mut windows {
            files.sort_by_key(|b| b.seq);
            if let Some(&supersedes) = supersedes_by_window.get(window_start)
                && supersedes > 0
            {
                remove_superseded(files, supersedes)?;
            }
        }
        Ok(Self { dir, windows })
    }

    /// Writes `block` as the next file of its window and makes it durable before returning.
    pub(crate) fn write(&mut self, block: NewBlock) -> Result<(), StoreError> {
        let files = self.windows.entry(block.window_start).or_default();
        let seq = files.last().map_or(1, |b| b.seq + 1);
        let supersedes = if block.replaces_window { seq } else { 0 };
        let name = format!("{}-{seq:06}", hex::encode(encode_ts(block.window_start)));
        let path = self.dir.join(format!("{name}.{EXTENSION}"));
        let temporary = self.dir.join(format!("{name}.tmp"));

        let bytes = encode(&block, seq, supersedes)?;
        let written = (|| {
            let mut file = File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            File::open(&self.dir)?.sync_all()
        })();
        written.map_err(|source| io(format!("writing block `{}`", path.display()), source))?;

        let (_, loaded, _) = load(&path)?;
        files.push(loaded);
        if block.replaces_window {
            remove_superseded(files, supersedes)?;
        }
        Ok(())
    }

    /// Returns whether window `window_start` has a block file.
    pub(crate) fn contains(&self, window_start: i64) -> bool {
        self.windows.contains_key(&window_start)
    }

    /// Start of every window that has block files with their number of files, in time
    /// order.
    pub(crate) fn windows(&self) -> Vec<(i64, usize)> {
        self.windows
            .iter()
            .map(|(start, files)| (*start, files.len()))
            .collect()
    }

    /// Chunks of series `id` in the windows that start within `first..=last`, oldest window
    /// first and, within a window, in file order.
    pub(crate) fn read(&self, id: u64, first: i64, last: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for files in self.windows.range(first..=last).map(|(_, files)| files) {
            for block in files {
                if let Some(chunk) = block.read(id)? {
                    out.push(chunk);
                }
            }
        }
        Ok(out)
    }

    /// Returns every chunk of window `window_start`, by series id, in file order.
    pub(crate) fn read_window(&self, window_start: i64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for block in self.windows.get(&window_start).into_iter().flatten() {
            let mut ids: Vec<u64> = block.index.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(chunk) = block.read(id)? {
                    out.push((id, chunk));
                }
            }
        }
        Ok(out)
    }

    /// Deletes every file of window `window_start`; returns how many chunks they held.
    pub(crate) fn remove_window(&mut self, window_start: i64) -> Result<u64, StoreError> {
        let Some(files) = self.windows.remove(&window_start) else {
            return Ok(0);
        };
        let mut chunks = 0;
        for block in files {
            chunks += block.index.len() as u64;
            remove(&block.path)?;
        }
        Ok(chunks)
    }

    /// Sizes of all block files.
    pub(crate) fn stats(&self) -> BlockStats {
        let mut stats = BlockStats::default();
        for block in self.windows.values().flatten() {
            stats.chunks += block.index.len() as u64;
            stats.chunk_bytes += block.chunk_bytes;
            stats.file_bytes += block.file_bytes;
        }
        stats
    }
}

impl BlockFile {
    fn read(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(&(offset, len)) = self.index.get(&id) else {
            return Ok(None);
        };
        let mut chunk = vec![0; len as usize];
        self.file
            .read_exact_at(&mut chunk, offset)
            .map_err(|source| io(format!("reading block `{}`", self.path.display()), source))?;
        Ok(Some(chunk))
    }
}

/// Serialises a block file.
fn encode(block: &NewBlock, seq: u32, supersedes: u32) -> Result<Vec<u8>, StoreError> {
    let chunk_bytes: usize = block.chunks.iter().map(|(_, c)| c.len()).sum();
    let mut out = Vec::with_capacity(
        HEADER_LEN + chunk_bytes + block.chunks.len() * INDEX_ENTRY_LEN + FOOTER_LEN,
    );
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&FILE_FORMAT.to_be_bytes());
    out.extend_from_slice(&encode_ts(block.window_start));
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&supersedes.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());

    let mut sorted: Vec<&(u64, Vec<u8>)> = block.chunks.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let mut index = Vec::with_capacity(sorted.len());
    for (id, chunk) in sorted {
        let len = u32::try_from(chunk.len()).map_err(|_| corrupt("chunk", "larger than 4 GiB"))?;
        index.push((*id, out.len() as u64, len));
        out.extend_from_slice(chunk);
    }
    let index_offset = out.len() as u64;
    for (id, offset, len) in &index {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    let count = u32::try_from(index.len()).map_err(|_| corrupt("block", "too many chunks"))?;
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&index_offset.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(FOOTER_MAGIC);
    Ok(out)
}

/// Reads and checks a block file. Returns its window start, the loaded block, and the
/// sequence number below which it supersedes the window's other files (0 for none).
fn load(path: &Path) -> Result<(i64, BlockFile, u32), StoreError> {
    let bytes = std::fs::read(path)
        .map_err(|source| io(format!("reading block `{}`", path.display()), source))?;
    let bad = |detail: &str| StoreError::CorruptBlock {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    };
    if bytes.len() < HEADER_LEN + FOOTER_LEN
        || !bytes.starts_with(HEADER_MAGIC)
        || !bytes.ends_with(FOOTER_MAGIC)
    {
        return Err(bad("it is truncated or not a block file"));
    }
    let field32 = |at: usize| {
        read_u32(bytes.get(at..).unwrap_or_default()).ok_or_else(|| bad("a field is cut short"))
    };
    let field64 = |at: usize| {
        read_u64(bytes.get(at..).unwrap_or_default()).ok_or_else(|| bad("a field is cut short"))
    };
    let format = field32(8)?;
    if format != FILE_FORMAT {
        return Err(bad(&format!(
            "file format `{format}` is not the `{FILE_FORMAT}` this build reads"
        )));
    }
    let window_start = decode_ts(field64(12)?.to_be_bytes());
    let seq = field32(20)?;
    let supersedes = field32(24)?;

    let footer = bytes.len() - FOOTER_LEN;
    let crc = field32(footer + 12)?;
    if crc32fast::hash(&bytes[..footer]) != crc {
        return Err(bad("its checksum does not match its contents"));
    }
    let index_offset =
        usize::try_from(field64(footer)?).map_err(|_| bad("index offset out of range"))?;
    let count = field32(footer + 8)? as usize;
    if index_offset < HEADER_LEN
        || index_offset.checked_add(count * INDEX_ENTRY_LEN) != Some(footer)
    {
        return Err(bad("its index does not fit the file"));
    }
    let mut index = HashMap::with_capacity(count);
    let mut chunk_bytes = 0;
    for entry in bytes[index_offset..footer].chunks_exact(INDEX_ENTRY_LEN) {
        let (Some(id), Some(offset), Some(len)) = (
            read_u64(entry),
            read_u64(&entry[8..]),
            read_u32(&entry[16..]),
        ) else {
            return Err(bad("an index entry is cut short"));
        };
        if offset < HEADER_LEN as u64 || offset + u64::from(len) > index_offset as u64 {
            return Err(bad("an index entry points outside the chunk area"));
        }
        chunk_bytes += u64::from(len);
        index.insert(id, (offset, len));
    }
    let file = File::open(path)
        .map_err(|source| io(format!("opening block `{}`", path.display()), source))?;
    let block = BlockFile {
        path: path.to_path_buf(),
        seq,
        file,
        index,
        chunk_bytes,
        file_bytes: bytes.len() as u64,
    };
    Ok((window_start, block, supersedes))
}

/// Deletes the files of a window whose sequence number is below `supersedes`.
fn remove_superseded(files: &mut Vec<BlockFile>, supersedes: u32) -> Result<(), StoreError> {
    let (obsolete, kept): (Vec<BlockFile>, Vec<BlockFile>) = std::mem::take(files)
        .into_iter()
        .partition(|b| b.seq < supersedes);
    *files = kept;
    for block in obsolete {
        remove(&block.path)?;
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io(format!("removing block `{}`", path.display()), source)),
    }
}

fn io(action: String, source: std::io::Error) -> StoreError {
    StoreError::Io { action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(window_start: i64, chunks: &[(u64, &[u8])], replaces_window: bool) -> NewBlock {
        NewBlock {
            window_start,
            chunks: chunks.iter().map(|(id, c)| (*id, c.to_vec())).collect(),
            replaces_window,
        }
    }

    #[test]
    fn written_blocks_read_back_after_reopening() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("blocks");
        let mut blocks = Blocks::open(path.clone())?;
        blocks.write(block(-7_200_000, &[(2, b"two"), (1, b"one")], false))?;
        blocks.write(block(0, &[(1, b"first")], false))?;
        blocks.write(block(0, &[(1, b"late")], false))?;
        drop(blocks);

        let blocks = Blocks::open(path)?;
        assert_eq!(
            blocks.read(1, -7_200_000, 0)?,
            vec![b"one".to_vec(), b"first".to_vec(), b"late".to_vec()]
        );
        assert_eq!(blocks.read(2, 0, 0)?, Vec::<Vec<u8>>::new());
        assert_eq!(blocks.windows(), vec![(-7_200_000, 1), (0, 2)]);
        let stats = blocks.stats();
        assert_eq!((stats.chunks, stats.chunk_bytes), (4, 15));
        Ok(())
    }

    /// Returns the paths of the files in `dir`.
    fn files_in(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .collect()
    }

    #[test]
    fn rewrite_supersedes_earlier_files() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("blocks");
        let mut blocks = Blocks::open(path.clone())?;
        blocks.write(block(0, &[(1, b"a")], false))?;
        blocks.write(block(0, &[(1, b"b")], false))?;
        // Keep a copy of an obsolete file, as a crash before its deletion would.
        let kept = files_in(&path).remove(0);
        let copy = std::fs::read(&kept).expect("read block");
        blocks.write(block(0, &[(1, b"rollup")], true))?;
        assert_eq!(blocks.read(1, 0, 0)?, vec![b"rollup".to_vec()]);
        std::fs::write(&kept, copy).expect("restore obsolete block");
        drop(blocks);

        let blocks = Blocks::open(path.clone())?;
        assert_eq!(blocks.read(1, 0, 0)?, vec![b"rollup".to_vec()]);
        assert_eq!(files_in(&path).len(), 1);
        Ok(())
    }

    #[test]
    fn open_removes_tmp_rejects_damage() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("blocks");
        let mut blocks = Blocks::open(path.clone())?;
        blocks.write(block(0, &[(1, b"abc")], false))?;
        drop(blocks);
        std::fs::write(path.join("0000-000009.tmp"), b"partial").expect("write");
        Blocks::open(path.clone())?;
        assert!(!path.join("0000-000009.tmp").exists());

        let file = files_in(&path).remove(0);
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[HEADER_LEN] ^= 0xff;
        std::fs::write(&file, bytes).expect("write");
        let error = Blocks::open(path).err().expect("damaged block rejected");
        let text = error.to_string();
        assert!(text.contains("checksum"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        Ok(())
    }
}

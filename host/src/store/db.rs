//! Opening the store: the sled database, the format-version check, the trees, head replay
//! and the writer thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::blocks::Blocks;
use super::commit::{PendingAppend, run_writer};
use super::config::StoreConfig;
use super::error::StoreError;
use super::events::EventLog;
use super::head::{Head, decode_record};
use super::kv::KvTree;
use super::sample::SeriesSamples;
use super::selector::Selector;
use super::series::{Labels, SeriesRegistry};
use super::wal::Wal;

/// Version of the on-disk layout that this build writes. Bump it whenever a key or value
/// encoding changes, so that an older or newer build rejects the directory instead of
/// misreading it.
pub const FORMAT_VERSION: u32 = 2;

/// Older format versions that this build opens and upgrades in place. Version 1 kept the head
/// and every chunk in sled. Version 2 writes the head to a write-ahead log and moves the
/// chunks of closed windows into block files. Opening a version 1 store replays its sled head
/// records; compaction moves them and its chunks to the new places.
const UPGRADABLE_VERSIONS: [u32; 1] = [1];

/// Directory of the block files, inside the store's directory.
const BLOCKS_DIR: &str = "blocks";

/// Directory of the head's write-ahead log, inside the store's directory.
const WAL_DIR: &str = "wal";

/// Appends that may wait for the writer; further appends wait for room (backpressure).
const QUEUE_CAPACITY: usize = 1024;

const META_TREE: &str = "meta";
const FORMAT_KEY: &str = "format_version";

/// State shared by the store handle, the writer thread and compaction.
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) path: PathBuf,
    pub(crate) config: StoreConfig,
    pub(crate) registry: SeriesRegistry,
    /// Head records of a version 1 store, until compaction has moved them into chunks.
    pub(crate) head_tree: sled::Tree,
    pub(crate) wal: Mutex<Wal>,
    pub(crate) chunks: sled::Tree,
    pub(crate) blocks: RwLock<Blocks>,
    pub(crate) head: RwLock<Head>,
    pub(crate) next_seq: AtomicU64,
    pub(crate) compaction: Mutex<()>,
    /// sled's log file, opened only to fdatasync it when a commit creates series and when
    /// compaction has written chunks.
    pub(crate) log_file: Option<Arc<std::fs::File>>,
}

impl Shared {
    pub(crate) fn head_read(&self) -> RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn head_write(&self) -> RwLockWriteGuard<'_, Head> {
        self.head.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes sled and, with `fsync_on_commit`, fdatasyncs its log file: sled's flush ends
    /// in sync_file_range on Linux, which flushes neither the disk's write cache nor the file
    /// size.
    pub(crate) fn sync_sled(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        if let Some(log) = &self.log_file {
            log.sync_data().map_err(|source| StoreError::Io {
                action: format!("fdatasync of `{}`", self.path.join("db").display()),
                source,
            })?;
        }
        Ok(())
    }

    pub(crate) fn wal_lock(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn blocks_read(&self) -> RwLockReadGuard<'_, Blocks> {
        self.blocks.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn blocks_write(&self) -> RwLockWriteGuard<'_, Blocks> {
        self.blocks.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to an open metric store. Cloning is cheap; the database closes when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

struct WriterHandle {
    queue: Mutex<Option<mpsc::Sender<PendingAppend>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Closing the queue ends the writer loop; joining it releases the writer's database
        // handle, so the directory can be opened again as soon as this returns.
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl Store {
    /// Opens or creates the store in directory `path`.
    ///
    /// Rejects a directory written by another format version, or one holding data that
    /// Umbra did not write, without changing it. Replays the head into memory.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(Some(config.flush_every_ms.max(1)))
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|error| match error {
                // sled takes an exclusive lock on its database file; a held lock comes back
                // as an I/O error of kind `Other` whose text names the lock and WouldBlock.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::InUse { path: path.clone() }
                }
                other => StoreError::Sled(other),
            })?;
        check_format(&db, &path)?;

        let registry = SeriesRegistry::open(&db)?;
        let head_tree = db.open_tree("head")?;
        let chunks = db.open_tree("chunks")?;
        let blocks = Blocks::open(path.join(BLOCKS_DIR))?;
        let (wal, from_wal) = Wal::open(path.join(WAL_DIR), config.fsync_on_commit)?;
        let (head, next_seq) = replay_head(&head_tree, from_wal)?;
        let log_file = if config.fsync_on_commit {
            let log_path = path.join("db");
            let file = std::fs::File::open(&log_path).map_err(|source| StoreError::Io {
                action: format!(
                    "opening sled's log file `{}` for fdatasync",
                    log_path.display()
                ),
                source,
            })?;
            Some(Arc::new(file))
        } else {
            None
        };
        tracing::info!(
            path = %path.display(),
            series = registry.len(),
            head_samples = head.len(),
            recovered = db.was_recovered(),
            "opened metric store"
        );

        let shared = Arc::new(Shared {
            db,
            path,
            config,
            registry,
            head_tree,
            wal: Mutex::new(wal),
            chunks,
            blocks: RwLock::new(blocks),
            head: RwLock::new(head),
            next_seq: AtomicU64::new(next_seq),
            compaction: Mutex::new(()),
            log_file,
        });
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("umbra-store-writer".into())
            .spawn(move || run_writer(writer_shared, receiver))
            .map_err(|source| StoreError::Io {
                action: "starting the store writer thread".into(),
                source,
            })?;
        Ok(Self {
            shared,
            writer: Arc::new(WriterHandle {
                queue: Mutex::new(Some(queue)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Directory of the store.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Settings the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// Appends samples and returns once they are flushed to disk; returns the number of
    /// samples written. Blocks the calling thread: from async code use [`Store::append_async`].
    ///
    /// # Panics
    ///
    /// Panics when called from inside an async runtime's worker thread.
    pub fn append(&self, batch: Vec<SeriesSamples>) -> Result<usize, StoreError> {
        let (done, receiver) = oneshot::channel();
        self.sender()?
            .blocking_send(PendingAppend { batch, done })
            .map_err(|_| StoreError::WriterStopped)?;
        Self::outcome(receiver.blocking_recv())
    }

    /// Appends samples and resolves once they are flushed to disk.
    pub async fn append_async(&self, batch: Vec<SeriesSamples>) -> Result<usize, StoreError> {
        let (done, receiver) = oneshot::channel();
        self.sender()?
            .send(PendingAppend { batch, done })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Self::outcome(receiver.await)
    }

    fn sender(&self) -> Result<mpsc::Sender<PendingAppend>, StoreError> {
        let queue = self.writer.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.as_ref().cloned().ok_or(StoreError::WriterStopped)
    }

    fn outcome(
        received: Result<Result<usize, Arc<StoreError>>, oneshot::error::RecvError>,
    ) -> Result<usize, StoreError> {
        match received {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(StoreError::CommitFailed(e)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// Flushes every tree to disk, events and key/value writes included.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.shared.db.flush()?;
        Ok(())
    }

    /// Series that match `selector`, with their ids.
    pub fn series(&self, selector: &Selector) -> Result<Vec<(u64, Labels)>, StoreError> {
        let all = self.shared.registry.list(selector.metric_name())?;
        Ok(all
            .into_iter()
            .filter(|(_, labels)| selector.matches(labels))
            .collect())
    }

    /// Label set of series `id`, if it exists.
    pub fn labels(&self, id: u64) -> Result<Option<Labels>, StoreError> {
        self.shared.registry.labels(id)
    }

    /// Opens (or creates) the append-only event log `name`.
    pub fn events(&self, name: &str) -> Result<EventLog, StoreError> {
        EventLog::open(&self.shared.db, self.shared.log_file.clone(), name)
    }

    /// Opens (or creates) the key/value tree `name`.
    pub fn kv(&self, name: &str) -> Result<KvTree, StoreError> {
        KvTree::open(&self.shared.db, name)
    }

    /// Counters that describe the store's size.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let blocks = self.shared.blocks_read().stats();
        let head_log_bytes = self.shared.wal_lock().bytes();
        let mut chunk_bytes = blocks.chunk_bytes;
        let mut chunks = blocks.chunks;
        for entry in self.shared.chunks.iter() {
            let (_, value) = entry?;
            chunk_bytes += value.len() as u64;
            chunks += 1;
        }
        Ok(StoreStats {
            series: self.shared.registry.len(),
            head_samples: self.shared.head_read().len(),
            chunks,
            chunk_bytes,
            block_bytes: blocks.file_bytes,
            head_log_bytes,
            disk_bytes: self.shared.db.size_on_disk()? + blocks.file_bytes + head_log_bytes,
        })
    }
}

/// Size counters of the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Number of known series.
    pub series: usize,
    /// Samples in the head, waiting for compaction.
    pub head_samples: usize,
    /// Number of compressed chunks, in sled and in block files.
    pub chunks: u64,
    /// Total size of the compressed chunks, in bytes (keys, indexes and sled overhead
    /// excluded).
    pub chunk_bytes: u64,
    /// Size of the block files, in bytes.
    pub block_bytes: u64,
    /// Size of the head's write-ahead log, in bytes.
    pub head_log_bytes: u64,
    /// Size of the store on disk: sled's files as sled reports them, the block files and
    /// the write-ahead log, in bytes.
    pub disk_bytes: u64,
}

/// Writes the format version into a new store, or checks the one an existing store has.
fn check_format(db: &sled::Db, path: &Path) -> Result<(), StoreError> {
    let meta = db.open_tree(META_TREE)?;
    if let Some(found) = meta.get(FORMAT_KEY)? {
        let found = found
            .as_ref()
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| super::error::corrupt("meta", "format version is not 4 bytes"))?;
        if UPGRADABLE_VERSIONS.contains(&found) {
            meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
            db.flush()?;
            tracing::info!(path = %path.display(), from = found, to = FORMAT_VERSION, "upgraded the metric store's format");
            return Ok(());
        }
        if found != FORMAT_VERSION {
            return Err(StoreError::IncompatibleFormat {
                path: path.to_path_buf(),
                found,
                expected: FORMAT_VERSION,
            });
        }
        return Ok(());
    }

    let has_data = !db.is_empty()
        || db
            .tree_names()
            .iter()
            .filter(|name| name.as_ref() != META_TREE.as_bytes())
            .any(|name| db.open_tree(name).map(|t| !t.is_empty()).unwrap_or(true));
    if has_data {
        return Err(StoreError::ForeignData {
            path: path.to_path_buf(),
        });
    }
    meta.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Loads every head record into memory, those a version 1 store kept in sled first, and
/// returns the head and the next sequence number.
fn replay_head(
    tree: &sled::Tree,
    from_wal: super::wal::Replayed,
) -> Result<(Head, u64), StoreError> {
    let mut head = Head::default();
    let mut next_seq = 0;
    for entry in tree.iter() {
        let (key, value) = entry?;
        let seq = super::keys::read_u64(&key)
            .ok_or_else(|| super::error::corrupt("head", "key is not 8 bytes"))?;
        head.apply(seq, &decode_record(&value)?);
        next_seq = seq + 1;
    }
    for (seq, entries) in from_wal {
        head.apply(seq, &entries);
        next_seq = next_seq.max(seq + 1);
    }
    Ok((head, next_seq))
}

//! The simulated item store behind `GET /api/items/{id}`.
//!
//! Looking an item up simulates a backend call. It takes `work_ms` on a cache miss and
//! `cache_hit_work_ms` on a hit, and the caller holds its worker slot throughout. The
//! wait is a timer, not computation, so latency depends on the configuration and the
//! load, and little on how busy the machine's CPUs are.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Config;
use crate::json;

/// Shortest wait that goes through Tokio's timer, whose resolution is one millisecond.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Whether a lookup was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// The cache is turned off in the configuration.
    Disabled,
}

impl CacheOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "disabled",
        }
    }
}

/// Items `0` to `key_space - 1` and the set of those already cached.
#[derive(Debug)]
pub struct Items {
    version: String,
    key_space: u64,
    work: Duration,
    cache_hit_work: Duration,
    /// Ids of cached items, or `None` when the cache is off.
    cached: Option<Mutex<HashSet<u64>>>,
}

impl Items {
    /// Creates the item store described by `config`, with an empty cache.
    pub fn new(config: &Config) -> Self {
        Self {
            version: config.version.clone(),
            key_space: config.key_space,
            work: config.work(),
            cache_hit_work: config.cache_hit_work(),
            cached: config.cache.then(|| Mutex::new(HashSet::new())),
        }
    }

    /// Number of items, so valid ids are `0` to `key_space - 1`.
    pub fn key_space(&self) -> u64 {
        self.key_space
    }

    /// Returns whether an item with this id exists.
    pub fn contains(&self, id: u64) -> bool {
        id < self.key_space
    }

    /// Looks up an existing item, waiting as long as the cache outcome requires.
    ///
    /// The caller holds a worker slot for the whole call. Returns the outcome and the JSON
    /// body of the item.
    pub async fn fetch(&self, id: u64) -> (CacheOutcome, String) {
        let outcome = self.cache_outcome(id);
        let work = match outcome {
            CacheOutcome::Hit => self.cache_hit_work,
            CacheOutcome::Miss | CacheOutcome::Disabled => self.work,
        };
        wait(work).await;

        if outcome == CacheOutcome::Miss {
            self.insert_cached(id);
        }

        let body = format!(
            "{{\"id\":{id},\"name\":{},\"version\":{},\"cache\":{}}}",
            json::quote(&format!("item {id}")),
            json::quote(&self.version),
            json::quote(outcome.as_str()),
        );
        (outcome, body)
    }

    fn cache_outcome(&self, id: u64) -> CacheOutcome {
        let Some(cached) = &self.cached else {
            return CacheOutcome::Disabled;
        };
        // A poisoned lock only means another request panicked while inserting an id, and
        // the set is still usable.
        let cached = cached.lock().unwrap_or_else(|poison| poison.into_inner());
        if cached.contains(&id) {
            CacheOutcome::Hit
        } else {
            CacheOutcome::Miss
        }
    }

    fn insert_cached(&self, id: u64) {
        if let Some(cached) = &self.cached {
            let mut cached = cached.lock().unwrap_or_else(|poison| poison.into_inner());
            cached.insert(id);
        }
    }
}

/// Waits for `duration` without using a CPU.
///
/// Tokio's timer rounds a sleep up to the next millisecond, which would turn a 0.2 ms
/// cache hit into about 1 ms. Shorter waits therefore sleep a thread of the blocking
/// pool, which the operating system wakes with far finer resolution.
async fn wait(duration: Duration) {
    if duration.is_zero() {
        return;
    }
    if duration >= TIMER_RESOLUTION {
        tokio::time::sleep(duration).await;
        return;
    }

    let sleeper = tokio::task::spawn_blocking(move || std::thread::sleep(duration));
    if let Err(error) = sleeper.await {
        // `thread::sleep` does not panic, so this only happens when the runtime shuts
        // down before the blocking task starts.
        tracing::debug!(%error, "short wait ended early");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(cache: bool) -> Items {
        let config = Config::from_toml(&format!(
            r#"
            version = "test"
            port = 18080
            data_dir = "data"
            workers = 1
            queue_limit = 0
            cache = {cache}
            work_ms = 2
            cache_hit_work_ms = 0.1
            key_space = 3
            "#
        ))
        .expect("test config should parse");
        Items::new(&config)
    }

    #[tokio::test]
    async fn second_fetch_hits_cache() {
        let items = items(true);

        let (first, _) = items.fetch(1).await;
        let (second, _) = items.fetch(1).await;

        assert_eq!(first, CacheOutcome::Miss);
        assert_eq!(second, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn disabled_cache_never_hits() {
        let items = items(false);

        let (first, _) = items.fetch(1).await;
        let (second, _) = items.fetch(1).await;

        assert_eq!(first, CacheOutcome::Disabled);
        assert_eq!(second, CacheOutcome::Disabled);
    }

    #[tokio::test]
    async fn fetched_body_names_item_and_version() {
        let items = items(true);

        let (_, body) = items.fetch(2).await;

        assert_eq!(
            body,
            r#"{"id":2,"name":"item 2","version":"test","cache":"miss"}"#
        );
    }

    #[test]
    fn ids_beyond_key_space_do_not_exist() {
        let items = items(true);

        assert!(items.contains(2));
        assert!(!items.contains(3));
    }
}

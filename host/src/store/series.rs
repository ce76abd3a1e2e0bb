//! Series identity: a metric name plus sorted labels, and the registry that maps each label
//! set to a stable numeric id.

use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;

use super::error::{LabelsError, StoreError, corrupt};

/// Label that carries the metric name, as in Prometheus.
pub const NAME_LABEL: &str = "__name__";

/// A validated label set, sorted by label name, that includes the metric name as
/// `__name__`. Two label sets with the same pairs are the same series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// Builds a label set from pairs in any order; one pair must be `__name__`.
    ///
    /// Pairs with an empty value are dropped, as Prometheus treats an empty label as absent.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, LabelsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        pairs.sort();

        for pair in pairs.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(LabelsError::DuplicateLabel(pair[0].0.clone()));
            }
        }

        let name = pairs
            .iter()
            .find(|(k, _)| k == NAME_LABEL)
            .map(|(_, v)| v.as_str())
            .ok_or(LabelsError::MissingName)?;
        if !is_metric_name(name) {
            return Err(LabelsError::InvalidName(name.to_owned()));
        }
        if let Some((bad, _)) = pairs
            .iter()
            .find(|(k, _)| k != NAME_LABEL && !is_label_name(k))
        {
            return Err(LabelsError::InvalidLabelName(bad.clone()));
        }
        Ok(Self(pairs))
    }

    /// Builds a label set from a metric name and its other labels.
    pub fn new<K, V>(
        name: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LabelsError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let pairs = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .chain(std::iter::once((NAME_LABEL.to_owned(), name.to_owned())));
        Self::from_pairs(pairs)
    }

    /// Metric name.
    pub fn name(&self) -> &str {
        self.get(NAME_LABEL).unwrap_or_default()
    }

    /// Value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Returns all pairs, sorted by label name, `__name__` included.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Canonical byte key: the metric name first, so that all series of one metric share a
    /// key prefix, then every other pair; each string is prefixed by its length (u32 BE).
    pub(crate) fn to_key(&self) -> Vec<u8> {
        let mut key = name_prefix(self.name());
        for (k, v) in self.0.iter().filter(|(k, _)| k != NAME_LABEL) {
            push_str(&mut key, k);
            push_str(&mut key, v);
        }
        key
    }

    /// Decodes a key written by [`Labels::to_key`].
    pub(crate) fn from_key(key: &[u8]) -> Result<Self, StoreError> {
        let mut rest = key;
        let name = take_str(&mut rest)?;
        let mut pairs = vec![(NAME_LABEL.to_owned(), name)];
        while !rest.is_empty() {
            let k = take_str(&mut rest)?;
            let v = take_str(&mut rest)?;
            pairs.push((k, v));
        }
        Ok(Self::from_pairs(pairs)?)
    }
}

/// Key prefix shared by all series of metric `name`.
pub(crate) fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    push_str(&mut key, name);
    key
}

fn push_str(key: &mut Vec<u8>, s: &str) {
    key.extend_from_slice(&(s.len() as u32).to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

fn take_str(rest: &mut &[u8]) -> Result<String, StoreError> {
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("series", "truncated length"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let bytes = rest
        .get(4..4 + len)
        .ok_or_else(|| corrupt("series", "truncated string"))?;
    let s = std::str::from_utf8(bytes).map_err(|_| corrupt("series", "label is not UTF-8"))?;
    *rest = &rest[4 + len..];
    Ok(s.to_owned())
}

/// Returns `true` if `s` is a valid Prometheus metric name.
pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Returns `true` if `s` is a valid Prometheus label name.
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Labels {
    /// Formats as a Prometheus series selector: `name{a="x",b="y"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let mut others = self.0.iter().filter(|(k, _)| k != NAME_LABEL).peekable();
        if others.peek().is_none() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (k, v)) in others.enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// Maps label sets to series ids, backed by two sled trees (`series`: key to id, and
/// `series_by_id`: id to key) and an in-memory cache.
pub(crate) struct SeriesRegistry {
    by_key: sled::Tree,
    by_id: sled::Tree,
    cache: RwLock<HashMap<Vec<u8>, u64>>,
    db: sled::Db,
}

impl SeriesRegistry {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let by_key = db.open_tree("series")?;
        let by_id = db.open_tree("series_by_id")?;
        let mut cache = HashMap::new();
        for entry in by_key.iter() {
            let (key, id) = entry?;
            let id =
                super::keys::read_u64(&id).ok_or_else(|| corrupt("series", "id is not 8 bytes"))?;
            cache.insert(key.to_vec(), id);
        }
        Ok(Self {
            by_key,
            by_id,
            cache: RwLock::new(cache),
            db: db.clone(),
        })
    }

    /// Returns the id of `labels`, registering the series if it is new. A new series is
    /// written to sled but not flushed: the caller flushes before acknowledging.
    pub(crate) fn resolve(&self, labels: &Labels) -> Result<u64, StoreError> {
        let key = labels.to_key();
        if let Some(id) = self.read_cache().get(&key) {
            return Ok(*id);
        }

        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = cache.get(&key) {
            return Ok(*id);
        }
        let id = self.db.generate_id()?;
        self.by_id.insert(id.to_be_bytes(), key.as_slice())?;
        self.by_key.insert(key.as_slice(), &id.to_be_bytes())?;
        cache.insert(key, id);
        Ok(id)
    }

    /// Label set of series `id`.
    pub(crate) fn labels(&self, id: u64) -> Result<Option<Labels>, StoreError> {
        match self.by_id.get(id.to_be_bytes())? {
            Some(key) => Ok(Some(Labels::from_key(&key)?)),
            None => Ok(None),
        }
    }

    /// All series whose metric name is `name`, or all series when `name` is `None`.
    pub(crate) fn list(&self, name: Option<&str>) -> Result<Vec<(u64, Labels)>, StoreError> {
        let iter = match name {
            Some(name) => self.by_key.scan_prefix(name_prefix(name)),
            None => self.by_key.iter(),
        };
        let mut out = Vec::new();
        for entry in iter {
            let (key, id) = entry?;
            let id =
                super::keys::read_u64(&id).ok_or_else(|| corrupt("series", "id is not 8 bytes"))?;
            out.push((id, Labels::from_key(&key)?));
        }
        Ok(out)
    }

    pub(crate) fn len(&self) -> usize {
        self.read_cache().len()
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Vec<u8>, u64>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_and_display() -> Result<(), LabelsError> {
        let labels = Labels::new("up", [("job", "node"), ("instance", "a:1")])?;
        assert_eq!(labels.to_string(), r#"up{instance="a:1",job="node"}"#);
        Ok(())
    }

    #[test]
    fn labels_key_round_trips() -> Result<(), StoreError> {
        let labels = Labels::new("x", [("a", "q\"uote"), ("b", "\u{0}nul")])?;
        assert_eq!(Labels::from_key(&labels.to_key())?, labels);
        Ok(())
    }

    #[test]
    fn labels_reject_duplicates() {
        let err = Labels::from_pairs([("__name__", "x"), ("a", "1"), ("a", "2")]);
        assert_eq!(err, Err(LabelsError::DuplicateLabel("a".into())));
    }

    #[test]
    fn labels_reject_bad_names() {
        assert_eq!(
            Labels::new("1x", [("a", "1")]),
            Err(LabelsError::InvalidName("1x".into()))
        );
        assert_eq!(
            Labels::new("x", [("a-b", "1")]),
            Err(LabelsError::InvalidLabelName("a-b".into()))
        );
        assert_eq!(
            Labels::from_pairs([("a", "1")]),
            Err(LabelsError::MissingName)
        );
    }

    #[test]
    fn empty_label_values_are_dropped() -> Result<(), LabelsError> {
        let labels = Labels::new("x", [("a", "")])?;
        assert_eq!(labels.pairs().len(), 1);
        Ok(())
    }
}

//! The catalog's pure half: a snapshot of the store's manifests and heads, the search filter
//! of `GET /api/versions`, and the lineage graph of one version, layered for drawing.
//!
//! Nothing here opens a Lance dataset: a snapshot reads `versions/*/manifest.json` (as `ward
//! list` does) and the heads. The server keeps the last snapshot in a [`SnapshotCache`] and
//! reads again only what changed (new or removed version folders, moved heads), so a page
//! over 10,000 versions does not read 10,000 manifests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::store::{Kind, ListFilter, Manifest, Store, VersionRef};

/// The page size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest page a request may ask for.
pub const MAX_LIMIT: usize = 500;

/// Every version of a store with the names (tags) whose head is on it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every committed version, newest first (shared with the snapshot it was refreshed
    /// from: a refresh after one new version copies 10,000 pointers, not 10,000 manifests).
    pub versions: Vec<Arc<Manifest>>,
    /// For each version with one, the names whose head points at it, in name order.
    pub tags: BTreeMap<ContentHash, Vec<String>>,
}

impl Snapshot {
    /// Reads the manifests and heads of `store` (blocking file I/O).
    ///
    /// # Errors
    /// The store's read errors (a damaged manifest is reported, not hidden).
    pub fn read(store: &Store) -> Result<Snapshot> {
        let versions = store
            .list(&ListFilter::default())?
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut tags: BTreeMap<ContentHash, Vec<String>> = BTreeMap::new();
        for name in store.names()? {
            if let Some(h) = store.head(&name)? {
                tags.entry(h.hash).or_default().push(name);
            }
        }
        Ok(Snapshot { versions, tags })
    }

    /// The store's snapshot now, from an older one: the version folders listed again and only
    /// the manifests not in `old` read (when `versions_changed`), the heads read again.
    ///
    /// # Errors
    /// As [`Snapshot::read`].
    pub fn refresh(store: &Store, old: &Snapshot, versions_changed: bool) -> Result<Snapshot> {
        let versions = if versions_changed {
            let known: BTreeMap<&ContentHash, &Arc<Manifest>> =
                old.versions.iter().map(|m| (&m.hash, m)).collect();
            let mut out = Vec::new();
            for hash in store.version_hashes()? {
                match known.get(&hash) {
                    Some(m) => out.push(Arc::clone(m)),
                    None => out.push(Arc::new(store.manifest(&hash)?)),
                }
            }
            // The order of `Store::list`: newest first, then by hash.
            out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.hash.cmp(&b.hash)));
            out
        } else {
            old.versions.clone()
        };
        let mut tags: BTreeMap<ContentHash, Vec<String>> = BTreeMap::new();
        for name in store.names()? {
            if let Some(h) = store.head(&name)? {
                tags.entry(h.hash).or_default().push(name);
            }
        }
        Ok(Snapshot { versions, tags })
    }

    /// The tags of `hash` (empty when none).
    pub fn tags_of(&self, hash: &ContentHash) -> &[String] {
        self.tags.get(hash).map(Vec::as_slice).unwrap_or_default()
    }

    /// The manifest of `hash`, if in the snapshot.
    pub fn get(&self, hash: &ContentHash) -> Option<&Manifest> {
        self.versions
            .iter()
            .find(|m| &m.hash == hash)
            .map(Arc::as_ref)
    }

    /// The version a path segment names: `b3:<hex>` or `<hex>`, whole or a prefix of at
    /// least 8 digits.
    ///
    /// # Errors
    /// [`Error::InvalidRef`] for something else or an ambiguous prefix; [`Error::NotFound`].
    pub fn find(&self, text: &str) -> Result<&Manifest> {
        let with_prefix = if text.starts_with("b3:") {
            text.to_string()
        } else {
            format!("b3:{text}")
        };
        let hex = match with_prefix.parse::<VersionRef>()? {
            VersionRef::Hash(h) => h.hex(),
            VersionRef::HashPrefix(p) => p,
            _ => {
                return Err(Error::InvalidRef {
                    reference: text.to_string(),
                    reason: "give a version hash, b3:<hex> (8 to 64 digits)".into(),
                })
            }
        };
        let found: Vec<&Manifest> = self
            .versions
            .iter()
            .filter(|m| m.hash.hex().starts_with(&hex))
            .map(Arc::as_ref)
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::NotFound {
                reference: format!("b3:{hex}"),
            }),
            _ => Err(Error::InvalidRef {
                reference: format!("b3:{hex}"),
                reason: format!("matches {} versions; give more digits", found.len()),
            }),
        }
    }
}

/// When a folder last changed, `None` if it does not exist.
fn mtime(path: &Path) -> Result<Option<SystemTime>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.modified().map_err(|e| Error::io(path, e))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// What a snapshot was read from: the modification times of `versions/` (a version added or
/// removed renames a folder in or out of it), of `refs/` (a new name) and of each
/// `refs/<name>/` (a head moved: a new entry is linked in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    versions: Option<SystemTime>,
    refs: Vec<(String, Option<SystemTime>)>,
}

impl Stamp {
    fn read(store: &Store) -> Result<Stamp> {
        if store.remote().is_some() {
            // Object storage has no folder times: a stamp that never settles, so every
            // read lists the versions again (reading only the new manifests).
            return Ok(Stamp {
                versions: Some(SystemTime::now()),
                refs: Vec::new(),
            });
        }
        let root = store.root();
        let refs_dir = root.join("refs");
        let mut refs = vec![(String::new(), mtime(&refs_dir)?)];
        if refs.first().is_some_and(|r| r.1.is_some()) {
            let mut names = Vec::new();
            for e in std::fs::read_dir(&refs_dir).map_err(|e| Error::io(&refs_dir, e))? {
                let e = e.map_err(|e| Error::io(&refs_dir, e))?;
                names.push(e.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            for n in names {
                let t = mtime(&refs_dir.join(&n))?;
                refs.push((n, t));
            }
        }
        Ok(Stamp {
            versions: mtime(&root.join("versions"))?,
            refs,
        })
    }

    /// Whether every time is old enough to trust: a folder changed within the file system's
    /// time granularity of the read could change again with the same time (the "racy" case
    /// of git's index), so such a stamp is read again next time.
    fn settled(&self, now: SystemTime) -> bool {
        let old = |t: &Option<SystemTime>| {
            t.is_none_or(|t| {
                now.duration_since(t)
                    .is_ok_and(|d| d > Duration::from_secs(2))
            })
        };
        old(&self.versions) && self.refs.iter().all(|(_, t)| old(t))
    }
}

/// The last snapshot read, with what it was read from.
#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    settled: bool,
    snap: Arc<Snapshot>,
}

/// The server's catalog index: the last [`Snapshot`], read again only when the store changed,
/// and then only in part (the manifests of new version folders, the heads when a name moved).
#[derive(Debug, Default)]
pub struct SnapshotCache {
    last: Mutex<Option<Cached>>,
}

impl SnapshotCache {
    /// The store's snapshot now (blocking file I/O: a few `stat` calls when nothing changed).
    ///
    /// # Errors
    /// As [`Snapshot::read`].
    pub fn get(&self, store: &Store) -> Result<Arc<Snapshot>> {
        let stamp = Stamp::read(store)?;
        let prev = {
            let g = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match g.as_ref() {
                Some(c) if c.settled && c.stamp == stamp => return Ok(c.snap.clone()),
                Some(c) => Some((c.stamp.clone(), c.snap.clone())),
                None => None,
            }
        };
        let snap = Arc::new(match prev {
            Some((old, snap)) => Snapshot::refresh(store, &snap, old.versions != stamp.versions)?,
            None => Snapshot::read(store)?,
        });
        let settled = stamp.settled(SystemTime::now());
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            stamp,
            settled,
            snap: snap.clone(),
        });
        Ok(snap)
    }
}

/// The search of `GET /api/versions` and the catalog page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Search {
    /// A name substring (case-insensitive) or a hash prefix (with or without `b3:`).
    pub q: String,
    /// Only versions of this kind.
    pub kind: Option<Kind>,
    /// Only versions a name (tag) with this exact name points at.
    pub tag: String,
    /// Page size.
    pub limit: usize,
    /// Versions skipped before the page.
    pub offset: usize,
}

impl Search {
    /// Parses a query string (`q=&kind=&tag=&limit=&offset=`, percent-encoded).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the parameter.
    pub fn parse(query: &str) -> Result<Search> {
        let mut s = Search {
            limit: DEFAULT_LIMIT,
            ..Search::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(|why| Error::invalid(format!("query {k}"), why))?;
            let v = v.trim();
            match k {
                "q" => s.q = v.to_string(),
                "kind" if v.is_empty() => s.kind = None,
                "kind" => s.kind = Some(v.parse()?),
                "tag" => s.tag = v.to_string(),
                "limit" | "offset" if v.is_empty() => {}
                "limit" => {
                    s.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Error::invalid(
                                "query limit",
                                format!("{v:?}: give a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                "offset" => {
                    s.offset = v.parse().map_err(|_| {
                        Error::invalid("query offset", format!("{v:?}: give a whole number >= 0"))
                    })?;
                }
                _ => {
                    return Err(Error::invalid(
                        format!("query {k}"),
                        "not known: the parameters are q, kind, tag, limit and offset",
                    ))
                }
            }
        }
        Ok(s)
    }

    /// Whether `m` (with its `tags`) matches, paging aside.
    pub fn matches(&self, m: &Manifest, tags: &[String]) -> bool {
        if self.kind.is_some_and(|k| k != m.kind) {
            return false;
        }
        if !self.tag.is_empty() && !tags.iter().any(|t| t == &self.tag) {
            return false;
        }
        if self.q.is_empty() {
            return true;
        }
        let q = self.q.to_ascii_lowercase();
        let hex = q.strip_prefix("b3:").unwrap_or(&q);
        m.name.to_ascii_lowercase().contains(&q)
            || (!hex.is_empty() && m.hash.hex().starts_with(hex))
    }

    /// The matching versions of `snap` (newest first) and how many match in all.
    pub fn run<'a>(&self, snap: &'a Snapshot) -> (Vec<&'a Manifest>, usize) {
        let all: Vec<&Manifest> = snap
            .versions
            .iter()
            .filter(|m| self.matches(m, snap.tags_of(&m.hash)))
            .map(Arc::as_ref)
            .collect();
        let total = all.len();
        let page = all.into_iter().skip(self.offset).take(self.limit).collect();
        (page, total)
    }

    /// The query string of this search at `offset` (for page links), percent-encoded.
    pub fn query_at(&self, offset: usize) -> String {
        let mut parts = Vec::new();
        if !self.q.is_empty() {
            parts.push(format!("q={}", percent_encode(&self.q)));
        }
        if let Some(k) = self.kind {
            parts.push(format!("kind={k}"));
        }
        if !self.tag.is_empty() {
            parts.push(format!("tag={}", percent_encode(&self.tag)));
        }
        if self.limit != DEFAULT_LIMIT {
            parts.push(format!("limit={}", self.limit));
        }
        if offset > 0 {
            parts.push(format!("offset={offset}"));
        }
        parts.join("&")
    }
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it).
///
/// # Errors
/// A message for a broken escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("broken percent escape at byte {i} of {s:?}"))?;
                out.push(byte);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Encodes everything but unreserved characters as `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One version in a lineage graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// The version's hash.
    pub hash: String,
    /// Its dataset name.
    pub name: String,
    /// Its kind (`missing` for an input the store does not hold).
    pub kind: String,
    /// Its column, from 0 (left: raw) rightwards.
    pub layer: usize,
    /// Its place in the column, from 0 (top).
    pub row: usize,
    /// Rows.
    pub rows: u64,
    /// Whether this is the version the graph was asked for.
    pub root: bool,
}

/// An input edge: `from` is listed in the lineage inputs of `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// The input.
    pub from: String,
    /// The version made from it.
    pub to: String,
}

/// The lineage of a version both ways: its inputs recursively (up to raw) and the versions
/// made from it recursively.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    /// The version asked for.
    pub root: String,
    /// Every version in the graph, by column then row.
    pub nodes: Vec<Node>,
    /// Every input edge between them.
    pub edges: Vec<Edge>,
    /// How many columns.
    pub layers: usize,
}

/// The column a kind is drawn in before inputs push it right.
fn kind_rank(kind: Option<Kind>) -> usize {
    match kind {
        None | Some(Kind::Raw) => 0,
        Some(Kind::Curated) | Some(Kind::Quarantine) => 1,
        Some(Kind::Timeline) => 2,
        Some(Kind::Training) => 3,
        Some(Kind::Model) => 4,
        Some(Kind::Other) => 5,
    }
}

/// The lineage graph of `root` in `snap`: ancestors through `lineage.inputs`, descendants
/// through the versions listing it. Columns follow the kind (raw, curated, timeline,
/// training, model, other), a version always right of its inputs; empty columns are dropped.
pub fn lineage(snap: &Snapshot, root: &ContentHash) -> Graph {
    let by_hash: BTreeMap<&ContentHash, &Manifest> = snap
        .versions
        .iter()
        .map(|m| (&m.hash, m.as_ref()))
        .collect();
    let mut users: BTreeMap<&ContentHash, Vec<&ContentHash>> = BTreeMap::new();
    for m in &snap.versions {
        for i in &m.lineage.inputs {
            users.entry(i).or_default().push(&m.hash);
        }
    }
    let mut members: BTreeSet<ContentHash> = BTreeSet::from([*root]);
    let mut queue = VecDeque::from([*root]);
    while let Some(h) = queue.pop_front() {
        for i in by_hash
            .get(&h)
            .map(|m| m.lineage.inputs.as_slice())
            .unwrap_or_default()
        {
            if members.insert(*i) {
                queue.push_back(*i);
            }
        }
    }
    let mut queue = VecDeque::from([*root]);
    while let Some(h) = queue.pop_front() {
        for u in users.get(&h).map(Vec::as_slice).unwrap_or_default() {
            if members.insert(**u) {
                queue.push_back(**u);
            }
        }
    }
    let inputs_of = |h: &ContentHash| -> Vec<ContentHash> {
        by_hash
            .get(h)
            .map(|m| {
                m.lineage
                    .inputs
                    .iter()
                    .filter(|i| members.contains(*i))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    };
    // Longest-path layering, bounded by the number of members (content hashes make cycles
    // impossible; a bound keeps a hand-edited store from looping).
    let mut layer: BTreeMap<ContentHash, usize> = members
        .iter()
        .map(|h| (*h, kind_rank(by_hash.get(h).map(|m| m.kind))))
        .collect();
    for _ in 0..=members.len() {
        let mut changed = false;
        for h in &members {
            let want = inputs_of(h)
                .iter()
                .map(|i| layer[i] + 1)
                .fold(layer[h], usize::max);
            if want != layer[h] && want <= members.len() + 4 {
                layer.insert(*h, want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let used: BTreeSet<usize> = layer.values().copied().collect();
    let compact: BTreeMap<usize, usize> = used.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut nodes: Vec<Node> = members
        .iter()
        .map(|h| {
            let m = by_hash.get(h);
            Node {
                hash: h.to_string(),
                name: m.map(|m| m.name.clone()).unwrap_or_default(),
                kind: m.map_or("missing", |m| m.kind.as_str()).to_string(),
                layer: compact[&layer[h]],
                row: 0,
                rows: m.map_or(0, |m| m.rows),
                root: h == root,
            }
        })
        .collect();
    nodes.sort_by(|a, b| {
        (a.layer, &a.kind, &a.name, &a.hash).cmp(&(b.layer, &b.kind, &b.name, &b.hash))
    });
    let mut next_row: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &mut nodes {
        let r = next_row.entry(n.layer).or_default();
        n.row = *r;
        *r += 1;
    }
    let mut edges: Vec<Edge> = members
        .iter()
        .flat_map(|h| {
            inputs_of(h).into_iter().map(move |i| Edge {
                from: i.to_string(),
                to: h.to_string(),
            })
        })
        .collect();
    edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
    edges.dedup();
    Graph {
        root: root.to_string(),
        nodes,
        edges,
        layers: compact.len(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Lineage;

    /// A manifest of `kind` named `name` with `inputs`, its hash from `n`.
    pub(crate) fn manifest(n: u8, kind: Kind, name: &str, inputs: &[ContentHash]) -> Manifest {
        Manifest {
            manifest_format: 1,
            hash: hash(n),
            kind,
            name: name.into(),
            schema: vec![],
            rows: u64::from(n),
            bytes: 10 * u64::from(n),
            created_at: chrono::DateTime::from_timestamp(i64::from(n) * 60, 0).expect("time"),
            lineage: Lineage {
                inputs: inputs.to_vec(),
                ..Lineage::default()
            },
            ward_version: "test".into(),
            labels: BTreeMap::new(),
            files: vec![],
            data: None,
            bucketing: None,
            seal: String::new(),
        }
    }

    pub(crate) fn hash(n: u8) -> ContentHash {
        format!("b3:{}", hex::encode([n; 32]))
            .parse()
            .expect("hash")
    }

    /// raw(1) -> patients(2), observations(3) -> timeline(4) -> training(5); an unrelated
    /// raw(6) -> curated(7); newest first as the store lists.
    pub(crate) fn chain() -> Snapshot {
        let mut versions = vec![
            manifest(1, Kind::Raw, "raw.fhir", &[]),
            manifest(2, Kind::Curated, "patients", &[hash(1)]),
            manifest(3, Kind::Curated, "observations", &[hash(1)]),
            manifest(4, Kind::Timeline, "sepsis.timeline", &[hash(2), hash(3)]),
            manifest(5, Kind::Training, "sepsis.train", &[hash(4)]),
            manifest(6, Kind::Raw, "raw.other", &[]),
            manifest(7, Kind::Curated, "patients", &[hash(6)]),
        ];
        versions.reverse();
        let versions = versions.into_iter().map(Arc::new).collect();
        let tags = BTreeMap::from([
            (
                hash(5),
                vec!["prod".to_string(), "sepsis.train".to_string()],
            ),
            (hash(7), vec!["patients".to_string()]),
        ]);
        Snapshot { versions, tags }
    }

    #[test]
    fn lineage_reaches_raw_and_users_in_kind_layers() {
        let snap = chain();
        // From the training set: everything it came from, nothing unrelated.
        let g = lineage(&snap, &hash(5));
        let layer = |n: u8| {
            g.nodes
                .iter()
                .find(|x| x.hash == hash(n).to_string())
                .map(|x| x.layer)
        };
        assert_eq!(
            [1, 2, 3, 4, 5].map(layer),
            [Some(0), Some(1), Some(1), Some(2), Some(3)]
        );
        assert_eq!(layer(6), None);
        assert_eq!(g.layers, 4);
        assert_eq!(g.edges.len(), 5);
        assert!(g.nodes.iter().filter(|n| n.root).count() == 1);
        // From the raw input: every version made from it, downwards.
        let g = lineage(&snap, &hash(1));
        assert_eq!(g.nodes.len(), 5);
        assert!(g.edges.contains(&Edge {
            from: hash(4).to_string(),
            to: hash(5).to_string()
        }));
        // Rows within a column are distinct.
        let curated: Vec<usize> = g
            .nodes
            .iter()
            .filter(|n| n.layer == 1)
            .map(|n| n.row)
            .collect();
        assert_eq!(curated, vec![0, 1]);
        // A curated version alone: its raw input, two columns.
        let g = lineage(&snap, &hash(7));
        assert_eq!(g.layers, 2);
    }

    #[test]
    fn layers_push_a_version_right_of_its_inputs_and_drop_empty_columns() {
        // A training set made directly from raw (no curated, no timeline), and a curated
        // version made from another curated one.
        let mut versions = vec![
            manifest(1, Kind::Raw, "r", &[]),
            manifest(2, Kind::Training, "t", &[hash(1)]),
            manifest(3, Kind::Curated, "c1", &[hash(1)]),
            manifest(4, Kind::Curated, "c2", &[hash(3)]),
        ];
        versions.reverse();
        let snap = Snapshot {
            versions: versions.into_iter().map(Arc::new).collect(),
            tags: BTreeMap::new(),
        };
        let g = lineage(&snap, &hash(1));
        let layer = |n: u8| {
            g.nodes
                .iter()
                .find(|x| x.hash == hash(n).to_string())
                .map(|x| x.layer)
                .expect("node")
        };
        assert_eq!(layer(1), 0);
        assert_eq!(layer(3), 1);
        assert_eq!(layer(4), 2);
        assert_eq!(layer(2), 3);
        // An input the store does not hold is a node of kind missing, in the first column.
        let snap = Snapshot {
            versions: vec![Arc::new(manifest(9, Kind::Timeline, "x", &[hash(8)]))],
            tags: BTreeMap::new(),
        };
        let g = lineage(&snap, &hash(9));
        assert_eq!(g.nodes[0].kind, "missing");
        assert_eq!((g.nodes[0].layer, g.nodes[1].layer, g.layers), (0, 1, 2));
    }

    #[test]
    fn search_filters_by_name_kind_tag_and_hash_prefix_and_pages() {
        let snap = chain();
        let hashes =
            |s: &Search| -> Vec<ContentHash> { s.run(&snap).0.iter().map(|m| m.hash).collect() };
        let s = Search::parse("").expect("empty");
        assert_eq!(s.run(&snap).1, 7);
        assert_eq!(hashes(&s)[0], hash(7), "newest first");
        let s = Search::parse("q=PATIENTS").expect("q");
        assert_eq!(hashes(&s), vec![hash(7), hash(2)]);
        let s = Search::parse("q=patients&kind=curated&tag=patients").expect("tag");
        assert_eq!(hashes(&s), vec![hash(7)]);
        let s = Search::parse(&format!("q=b3%3A{}", &hash(4).hex()[..10])).expect("prefix");
        assert_eq!(hashes(&s), vec![hash(4)]);
        let s = Search::parse(&format!("q={}", &hash(4).hex()[..10])).expect("bare prefix");
        assert_eq!(hashes(&s), vec![hash(4)]);
        let s = Search::parse("kind=raw").expect("kind");
        assert_eq!(hashes(&s), vec![hash(6), hash(1)]);
        let s = Search::parse("tag=prod").expect("tag");
        assert_eq!(hashes(&s), vec![hash(5)]);
        let s = Search::parse("limit=2&offset=2&kind=").expect("page");
        assert_eq!(hashes(&s), vec![hash(5), hash(4)]);
        assert_eq!(s.run(&snap).1, 7);
        assert_eq!(s.query_at(4), "limit=2&offset=4");
        let s = Search::parse("q=a+b%26c&tag=x").expect("decode");
        assert_eq!(s.q, "a b&c");
        assert_eq!(s.query_at(0), "q=a%20b%26c&tag=x");
        for (bad, names) in [
            ("limit=0", "query limit"),
            ("limit=501", "query limit"),
            ("offset=-1", "query offset"),
            ("kind=weights", "kind"),
            ("q=%zz", "query q"),
            ("sort=name", "query sort"),
        ] {
            let e = Search::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(names), "{bad}: {e}");
        }
    }

    #[test]
    fn find_takes_whole_hashes_and_prefixes() {
        let snap = chain();
        let h = hash(4);
        assert_eq!(snap.find(&h.to_string()).expect("whole").hash, h);
        assert_eq!(snap.find(&h.hex()[..8]).expect("prefix").hash, h);
        assert!(matches!(
            snap.find(&hash(9).hex()),
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            snap.find("patients"),
            Err(Error::InvalidRef { .. })
        ));
        assert!(matches!(
            snap.find("b3:0123"),
            Err(Error::InvalidRef { .. })
        ));
    }
}

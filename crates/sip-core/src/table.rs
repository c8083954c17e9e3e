//! Hash tables for the hot path that never stall a message on growth.
//!
//! A hash table grows by moving every entry into a table twice the size and hashing each key
//! again. With transactions stored inline (hundreds of bytes each) and keys hashed with SipHash,
//! growing past 28,672 transactions took one message 20–40 ms on the bench machine: every call
//! arriving meanwhile waited (the post-dial-delay tail, benches/README.md). The two types here make
//! growth cheap enough to go unnoticed:
//!
//! - [`IdMap`]: keyed by a sequence number this process hands out (transaction and call ids, never
//!   chosen by a peer), hashed with one multiplication; the values are boxed, so growing moves
//!   16-byte slots, not the entries.
//! - [`KeyIndex`]: keyed by what a peer sends (a Via branch, a Call-ID), hashed once with the
//!   process's random-keyed SipHash (a peer cannot aim collisions); a slot holds that hash and the
//!   entry's id (the entry keeps its key), so growing moves 16-byte slots and hashes nothing again.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// Hasher for sequence numbers handed out by this process: Fibonacci hashing (one multiplication
/// by 2^64/φ). Consecutive ids land in distinct buckets and spread over the high bits hashbrown
/// uses for its control bytes. Not for keys a peer chooses.
#[derive(Default, Clone, Copy)]
pub struct SeqHasher(u64);

impl Hasher for SeqHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
}

/// A map from ids this process hands out to values kept boxed (see the module notes). The
/// accessors hand out the values, not the boxes.
///
/// Removed entries leave their box in a spare list (at most as many as the map holds, plus 1,024)
/// for the next insert. Transactions come and go thousands of times a second; freeing their
/// boxes let glibc hand the chunks to long-lived allocations (registrations) in between, so the
/// next transactions took fresh memory: per registration the heap grew 740 B instead of 310 B.
pub struct IdMap<K, V> {
    map: HashMap<K, Box<Option<V>>, BuildHasherDefault<SeqHasher>>,
    spare: Vec<Box<Option<V>>>,
}

impl<K: Hash + Eq + Copy, V> Default for IdMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Copy, V> IdMap<K, V> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Room for `n` entries before the first growth.
    pub fn with_capacity(n: usize) -> Self {
        IdMap {
            map: HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default()),
            spare: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).and_then(|b| b.as_ref().as_ref())
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).and_then(|b| b.as_mut().as_mut())
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let b = match self.spare.pop() {
            Some(mut b) => {
                *b = Some(v);
                b
            }
            None => Box::new(Some(v)),
        };
        let old = self.map.insert(k, b)?;
        self.recycle(old)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let b = self.map.remove(k)?;
        self.recycle(b)
    }

    /// Takes the value out of a box that left the map and keeps the box for reuse.
    fn recycle(&mut self, mut b: Box<Option<V>>) -> Option<V> {
        let v = b.take();
        if self.spare.len() < self.map.len() + 1024 {
            self.spare.push(b);
        }
        v
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().filter_map(|v| v.as_ref().as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map
            .iter()
            .filter_map(|(k, v)| v.as_ref().as_ref().map(|v| (k, v)))
    }
}

/// An index from peer-chosen keys to the ids of entries that keep their own key (see the module
/// notes). A slot is the key's hash and the id, 16 bytes: growing moves slots and hashes nothing
/// again, and no key is stored twice. The caller says, for a slot's id, whether that entry has the
/// key looked for.
pub struct KeyIndex<V> {
    table: hashbrown::HashTable<(u64, V)>,
    hasher: std::collections::hash_map::RandomState,
}

impl<V: Copy + Eq> Default for KeyIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq> KeyIndex<V> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Room for `n` keys before the first growth.
    pub fn with_capacity(n: usize) -> Self {
        KeyIndex {
            table: hashbrown::HashTable::with_capacity(n),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The hash this index files `key` under (random-keyed SipHash).
    pub fn hash<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The id filed under `hash` whose entry has the key.
    pub fn find(&self, hash: u64, has_key: impl Fn(V) -> bool) -> Option<V> {
        self.table
            .find(hash, |&(h, v)| h == hash && has_key(v))
            .map(|&(_, v)| v)
    }

    /// Files `value` under `hash`, replacing the id of an entry with the same key; returns that id.
    pub fn insert(&mut self, hash: u64, value: V, has_key: impl Fn(V) -> bool) -> Option<V> {
        match self
            .table
            .entry(hash, |&(h, v)| h == hash && has_key(v), |e| e.0)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(&mut o.get_mut().1, value))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((hash, value));
                None
            }
        }
    }

    /// Removes `value` filed under `hash`, if it is still there (a newer id for the same key stays).
    pub fn remove(&mut self, hash: u64, value: V) -> bool {
        match self
            .table
            .find_entry(hash, |&(h, v)| h == hash && v == value)
        {
            Ok(o) => {
                o.remove();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries keep their keys; the index finds them through `has_key`.
    fn lookup(ix: &KeyIndex<usize>, keys: &[Option<String>], key: &str) -> Option<usize> {
        ix.find(ix.hash(key), |i| keys[i].as_deref() == Some(key))
    }

    #[test]
    fn key_index_insert_find_replace_remove() {
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut ix: KeyIndex<usize> = KeyIndex::new();
        for k in ["z9hG4bK1", "z9hG4bK2", "z9hG4bK1"] {
            keys.push(Some(k.to_owned()));
            let id = keys.len() - 1;
            let h = ix.hash(k);
            let replaced = ix.insert(h, id, |i| keys[i].as_deref() == Some(k));
            // The third entry has the first one's key: it takes its place in the index.
            assert_eq!(replaced, (id == 2).then_some(0));
        }
        assert_eq!(ix.len(), 2);
        assert_eq!(lookup(&ix, &keys, "z9hG4bK1"), Some(2));
        assert_eq!(lookup(&ix, &keys, "z9hG4bK2"), Some(1));
        assert_eq!(lookup(&ix, &keys, "z9hG4bK3"), None);
        // Removing the replaced id leaves the newer one.
        assert!(!ix.remove(ix.hash("z9hG4bK1"), 0));
        assert!(ix.remove(ix.hash("z9hG4bK1"), 2));
        assert_eq!(lookup(&ix, &keys, "z9hG4bK1"), None);
        assert!(ix.remove(ix.hash("z9hG4bK2"), 1));
        assert!(ix.is_empty());
    }

    #[test]
    fn key_index_survives_growth() {
        let keys: Vec<Option<String>> = (0..100_000).map(|i| Some(format!("branch-{i}"))).collect();
        let mut ix: KeyIndex<usize> = KeyIndex::new();
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_deref().unwrap_or_default();
            assert_eq!(
                ix.insert(ix.hash(k), i, |j| keys[j].as_deref() == Some(k)),
                None
            );
        }
        assert_eq!(ix.len(), 100_000);
        for i in (0..100_000).step_by(7) {
            assert_eq!(lookup(&ix, &keys, &format!("branch-{i}")), Some(i));
        }
        for i in 0..50_000 {
            assert!(ix.remove(ix.hash(format!("branch-{i}").as_str()), i));
        }
        assert_eq!(ix.len(), 50_000);
        assert_eq!(lookup(&ix, &keys, "branch-49999"), None);
        assert_eq!(lookup(&ix, &keys, "branch-50000"), Some(50_000));
    }

    #[test]
    fn seq_hasher_spreads_consecutive_ids() {
        let h = |n: u64| {
            let mut s = SeqHasher::default();
            s.write_u64(n);
            s.finish()
        };
        // Low bits (bucket index) distinct for consecutive ids, top 7 bits (control byte) varied.
        let low: std::collections::HashSet<u64> = (0..1024).map(|n| h(n) & 1023).collect();
        assert_eq!(low.len(), 1024);
        let top: std::collections::HashSet<u64> = (0..1024).map(|n| h(n) >> 57).collect();
        assert!(top.len() > 100, "only {} distinct control bytes", top.len());
    }

    #[test]
    fn id_map_boxes_values() {
        let mut m: IdMap<u64, [u8; 700]> = IdMap::new();
        for i in 0..10_000u64 {
            m.insert(i, [i as u8; 700]);
        }
        assert_eq!(m.get(&9_999).map(|v| v[0]), Some((9_999 % 256) as u8));
        assert_eq!(m.remove(&5).map(|v| v[699]), Some(5));
        assert_eq!(m.len(), 9_999);
        // A removed entry's box is reused by the next insert; the values stay right.
        assert_eq!(m.get(&5), None);
        assert_eq!(m.insert(20_000, [7; 700]), None);
        assert_eq!(m.get(&20_000).map(|v| v[0]), Some(7));
        assert_eq!(m.insert(20_000, [8; 700]).map(|v| v[0]), Some(7));
        assert_eq!(m.values().count(), 10_000);
    }
}

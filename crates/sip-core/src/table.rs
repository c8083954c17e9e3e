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
//!   process's random-keyed SipHash (a peer cannot aim collisions); the hash is kept beside the
//!   key, so growing moves slots without hashing anything again.

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
        IdMap {
            map: HashMap::with_hasher(BuildHasherDefault::default()),
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

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map
            .iter()
            .filter_map(|(k, v)| v.as_ref().as_ref().map(|v| (k, v)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.map
            .iter_mut()
            .filter_map(|(k, v)| v.as_mut().as_mut().map(|v| (k, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().filter_map(|v| v.as_ref().as_ref())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut().filter_map(|v| v.as_mut().as_mut())
    }

    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        // The boxes of the entries dropped here are freed, not kept: it runs off the hot path.
        self.map.retain(|k, v| match v.as_mut().as_mut() {
            Some(inner) => f(k, inner),
            None => false,
        });
    }

    pub fn clear(&mut self) {
        self.map.clear()
    }
}

/// A map from peer-chosen keys to small copyable values (ids) that keeps each key's hash, so
/// that growing never hashes again (see the module notes).
pub struct KeyIndex<K, V> {
    table: hashbrown::HashTable<(u64, K, V)>,
    hasher: std::collections::hash_map::RandomState,
}

impl<K: Hash + Eq, V: Copy> Default for KeyIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V: Copy> KeyIndex<K, V> {
    pub fn new() -> Self {
        KeyIndex {
            table: hashbrown::HashTable::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        self.table
            .find(h, |(eh, k, _)| *eh == h && k.borrow() == key)
            .map(|e| e.2)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let h = self.hash(&key);
        match self
            .table
            .entry(h, |(eh, k, _)| *eh == h && *k == key, |e| e.0)
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(&mut o.get_mut().2, value))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((h, key, value));
                None
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = self.hash(key);
        match self
            .table
            .find_entry(h, |(eh, k, _)| *eh == h && k.borrow() == key)
        {
            Ok(o) => Some(o.remove().0 .2),
            Err(_) => None,
        }
    }

    /// Removes `key` only while it still maps to `value` (a newer entry under the same key stays).
    pub fn remove_if_eq<Q>(&mut self, key: &Q, value: V) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: PartialEq,
    {
        let h = self.hash(key);
        match self
            .table
            .find_entry(h, |(eh, k, v)| *eh == h && k.borrow() == key && *v == value)
        {
            Ok(o) => {
                o.remove();
                true
            }
            Err(_) => false,
        }
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_index_insert_get_replace_remove() {
        let mut m: KeyIndex<Box<str>, u64> = KeyIndex::new();
        assert_eq!(m.insert("z9hG4bK1".into(), 1), None);
        assert_eq!(m.insert("z9hG4bK2".into(), 2), None);
        assert_eq!(m.get("z9hG4bK1"), Some(1));
        assert_eq!(m.insert("z9hG4bK1".into(), 3), Some(1));
        assert_eq!(m.get("z9hG4bK1"), Some(3));
        assert!(!m.remove_if_eq("z9hG4bK1", 1));
        assert!(m.remove_if_eq("z9hG4bK1", 3));
        assert_eq!(m.get("z9hG4bK1"), None);
        assert_eq!(m.remove("z9hG4bK2"), Some(2));
        assert!(m.is_empty());
    }

    #[test]
    fn key_index_survives_growth() {
        let mut m: KeyIndex<String, usize> = KeyIndex::new();
        for i in 0..100_000 {
            m.insert(format!("branch-{i}"), i);
        }
        assert_eq!(m.len(), 100_000);
        for i in (0..100_000).step_by(7) {
            assert_eq!(m.get(format!("branch-{i}").as_str()), Some(i));
        }
        for i in 0..50_000 {
            assert_eq!(m.remove(format!("branch-{i}").as_str()), Some(i));
        }
        assert_eq!(m.len(), 50_000);
        assert_eq!(m.get("branch-49999"), None);
        assert_eq!(m.get("branch-50000"), Some(50_000));
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
        m.retain(|k, _| *k < 100);
        assert_eq!(m.len(), 99);
    }
}

//! A map with a hard cap on its entries: the oldest inserted goes first.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState},
};

/// At most `cap` entries; inserting a new key into a full map evicts the
/// entry inserted longest ago (first in, first out: replacing the value of a
/// key already there does not make it younger). The insertion-order queue
/// holds at most `2 * cap + 16` slots (those of removed keys are compacted
/// away), so the whole map stays within a fixed size whatever the churn.
pub struct Bounded<K, V, S = RandomState> {
    map: HashMap<K, (V, u64), S>,
    order: VecDeque<(K, u64)>,
    next: u64,
    cap: usize,
}

/// Pid-keyed maps: pids are small integers the kernel hands out (a process
/// cannot choose them), so a multiplicative hash is enough and several times
/// cheaper than SipHash on the fork/exit/connect path.
pub type PidMap<V> = Bounded<u32, V, BuildHasherDefault<PidHasher>>;

#[derive(Default, Clone, Copy)]
pub struct PidHasher(u64);

impl Hasher for PidHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl<K: Hash + Eq + Clone, V, S: BuildHasher + Default> Bounded<K, V, S> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Bounded { map: HashMap::with_hasher(S::default()), order: VecDeque::new(), next: 0, cap }
    }

    /// Inserts `k`, or replaces its value in place; evicts the oldest entry
    /// when full.
    pub fn insert(&mut self, k: K, v: V) {
        if let Some(slot) = self.map.get_mut(&k) {
            slot.0 = v;
            return;
        }
        let seq = self.next;
        self.next += 1;
        self.order.push_back((k.clone(), seq));
        self.map.insert(k, (v, seq));
        while self.map.len() > self.cap {
            self.evict_oldest();
        }
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|(_, cur)| cur == s));
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((k, s)) = self.order.pop_front() {
            if self.map.get(&k).is_some_and(|(_, cur)| *cur == s) {
                self.map.remove(&k);
                return;
            }
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    /// The entry, in place (its age is unchanged).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(v, _)| v)
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    /// Keeps the entries for which `f` holds.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(|k, (v, _)| f(k, v));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Slots of the insertion-order queue (for the bound tests).
    pub fn queue_len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_oldest_and_stays_bounded() {
        let mut m: Bounded<u32, u32> = Bounded::new(3);
        for k in 0..3 {
            m.insert(k, k * 10);
        }
        m.insert(0, 1); // replaced in place: still the oldest
        m.insert(3, 30);
        assert_eq!(m.get(&0), None, "the oldest went first");
        assert_eq!((m.get(&1), m.get(&2), m.get(&3)), (Some(&10), Some(&20), Some(&30)));
        // A removed key's slot does not count against the cap.
        m.remove(&1);
        m.insert(4, 40);
        assert_eq!((m.len(), m.get(&2)), (3, Some(&20)));
        for k in 0..1_000_000u32 {
            m.insert(k % 7, k);
            if k % 5 == 0 {
                m.remove(&(k % 7));
            }
        }
        assert!(m.len() <= 3 && m.queue_len() <= 2 * 3 + 16, "{} {}", m.len(), m.queue_len());
    }

    #[test]
    fn pid_maps_spread_sequential_and_strided_pids() {
        let mut m: PidMap<()> = Bounded::new(1 << 16);
        for pid in (0..1u32 << 16).map(|i| i * 4096) {
            m.insert(pid, ());
        }
        assert_eq!(m.len(), 1 << 16);
        assert!(m.contains(&(4096 * 77)) && !m.contains(&1));
    }
}

//! A map with a hard cap on its entries: the oldest inserted goes first.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

/// At most `cap` entries; inserting a new key into a full map evicts the
/// entry inserted (or re-inserted) longest ago. The insertion-order queue
/// holds at most `2 * cap + 16` slots (stale ones are compacted away), so the
/// whole map stays within a fixed size whatever the churn.
pub struct Bounded<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
    next: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Bounded { map: HashMap::new(), order: VecDeque::new(), next: 0, cap }
    }

    /// Inserts or replaces `k` (then the newest), evicting the oldest entry
    /// when full.
    pub fn insert(&mut self, k: K, v: V) {
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
        let mut m = Bounded::new(3);
        for k in 0..3 {
            m.insert(k, k * 10);
        }
        m.insert(0, 1); // re-inserted: now the newest
        m.insert(3, 30);
        assert_eq!(m.get(&1), None, "the oldest went first");
        assert_eq!((m.get(&0), m.get(&2), m.get(&3)), (Some(&1), Some(&20), Some(&30)));
        for k in 0..1_000_000u32 {
            m.insert(k % 7, k);
            if k % 5 == 0 {
                m.remove(&(k % 7));
            }
        }
        assert!(m.len() <= 3 && m.queue_len() <= 2 * 3 + 16, "{} {}", m.len(), m.queue_len());
    }
}

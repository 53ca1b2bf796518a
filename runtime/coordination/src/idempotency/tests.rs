use proptest::prelude::*;

use super::*;

fn table(capacity: usize) -> Producers {
    Producers::new(NonZeroUsize::new(capacity).unwrap())
}

#[test]
fn a_new_producer_starts_anywhere_then_counts_up_by_one() {
    let mut p = table(4);
    assert_eq!(p.apply("a", 17, 1).decision, Decision::Apply);
    assert_eq!(p.apply("a", 18, 2).decision, Decision::Apply);
    assert_eq!(p.check("a", 18), Decision::Duplicate { last: 18 });
    assert_eq!(p.check("a", 3), Decision::Duplicate { last: 18 });
    assert_eq!(p.check("a", 20), Decision::Gap { expected: 19 });
    assert_eq!(p.apply("a", 20, 3).decision, Decision::Gap { expected: 19 });
    assert_eq!(p.last("a"), Some(18));
    assert_eq!(p.check("b", 0), Decision::Apply);
}

#[test]
fn the_last_sequence_number_has_no_successor() {
    let mut p = table(1);
    p.apply("a", u64::MAX, 1);
    assert_eq!(
        p.check("a", u64::MAX),
        Decision::Duplicate { last: u64::MAX }
    );
    assert_eq!(p.check("a", 0), Decision::Duplicate { last: u64::MAX });
}

#[test]
fn the_least_recently_used_producer_is_forgotten_first() {
    let mut p = table(2);
    p.apply("a", 0, 1);
    p.apply("b", 0, 2);
    // A duplicate counts as use: `a` was used at 3, after `b`.
    assert_eq!(p.apply("a", 0, 3).decision, Decision::Duplicate { last: 0 });
    let added = p.apply("c", 0, 4);
    assert_eq!(added.evicted.as_deref(), Some("b"));
    assert_eq!(
        (p.last("a"), p.last("b"), p.last("c")),
        (Some(0), None, Some(0))
    );
    // Forgotten, `b` is new again: a retry of its request 0 is applied a second time.
    assert_eq!(p.check("b", 0), Decision::Apply);
    assert_eq!(p.len(), 2);
}

#[test]
fn producers_used_at_the_same_index_are_forgotten_by_name() {
    let mut p = table(2);
    p.apply("b", 0, 5);
    p.apply("a", 0, 5);
    assert_eq!(p.apply("c", 0, 5).evicted.as_deref(), Some("a"));
}

#[test]
fn a_gap_does_not_count_as_use() {
    let mut p = table(2);
    p.apply("a", 0, 1);
    p.apply("b", 0, 2);
    assert_eq!(p.apply("a", 5, 3).decision, Decision::Gap { expected: 1 });
    assert_eq!(p.apply("c", 0, 4).evicted.as_deref(), Some("a"));
}

#[test]
fn a_stored_table_decides_and_forgets_as_the_original() {
    let mut p = table(3);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        p.apply(name, 7, i as u64);
    }
    let mut back: Producers = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    assert_eq!(back.apply("d", 0, 9), p.apply("d", 0, 9));
    assert_eq!(back, p);
}

/// The reference: the requests applied, as a plain list, and the last use of each remembered
/// producer, scanned in full for every decision.
#[derive(Debug)]
struct Model {
    capacity: usize,
    applied: Vec<(String, u64)>,
    used: Vec<(String, LogIndex)>,
}

impl Model {
    fn decide(&self, producer: &str, seq: u64) -> Decision {
        if !self.used.iter().any(|(name, _)| name == producer) {
            return Decision::Apply;
        }
        let last = self
            .applied
            .iter()
            .filter(|(name, _)| name == producer)
            .map(|(_, s)| *s)
            .max()
            .expect("a remembered producer has applied something");
        if seq <= last {
            Decision::Duplicate { last }
        } else if seq == last + 1 {
            Decision::Apply
        } else {
            Decision::Gap { expected: last + 1 }
        }
    }

    fn apply(&mut self, producer: &str, seq: u64, index: LogIndex) -> Applied {
        let decision = self.decide(producer, seq);
        let mut evicted = None;
        if matches!(decision, Decision::Gap { .. }) {
            return Applied { decision, evicted };
        }
        if let Some(entry) = self.used.iter_mut().find(|(name, _)| name == producer) {
            entry.1 = entry.1.max(index);
        } else {
            if self.used.len() == self.capacity {
                let oldest = self
                    .used
                    .iter()
                    .min_by(|x, y| (x.1, &x.0).cmp(&(y.1, &y.0)))
                    .unwrap()
                    .0
                    .clone();
                self.used.retain(|(name, _)| *name != oldest);
                // Forgotten: what it applied no longer decides anything.
                self.applied.retain(|(name, _)| *name != oldest);
                evicted = Some(oldest);
            }
            self.used.push((producer.to_owned(), index));
        }
        if decision == Decision::Apply {
            self.applied.push((producer.to_owned(), seq));
        }
        Applied { decision, evicted }
    }
}

/// Requests of a few producers with sequence numbers close together (so that repeated numbers and
/// gaps are common), carried by log entries whose index rises by 0 (same entry) or 1.
fn requests() -> impl Strategy<Value = Vec<(String, u64, LogIndex)>> {
    proptest::collection::vec((0..6u8, 0..10u64, 0..2u64), 0..200).prop_map(|raw| {
        let mut index = 0;
        raw.into_iter()
            .map(|(producer, seq, step)| {
                index += step;
                (format!("p{producer}"), seq, index)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decisions_match_the_reference_model(capacity in 1..8usize, requests in requests()) {
        let mut table = table(capacity);
        let mut model = Model { capacity, applied: Vec::new(), used: Vec::new() };
        for (producer, seq, index) in &requests {
            prop_assert_eq!(table.check(producer, *seq), model.decide(producer, *seq));
            let applied = table.apply(producer, *seq, *index);
            prop_assert_eq!(applied, model.apply(producer, *seq, *index));
            prop_assert!(table.len() <= capacity);
        }
    }

    /// With room for every producer, each producer's applied numbers are consecutive: none
    /// applied twice, none skipped.
    #[test]
    fn with_room_for_all_a_request_is_applied_once_and_in_order(requests in requests()) {
        let mut table = table(6);
        let mut applied: Vec<(String, u64)> = Vec::new();
        for (producer, seq, index) in &requests {
            if table.apply(producer, *seq, *index).decision == Decision::Apply {
                prop_assert!(!applied.contains(&(producer.clone(), *seq)));
                applied.push((producer.clone(), *seq));
            }
        }
        for name in (0..6).map(|p| format!("p{p}")) {
            let seqs: Vec<u64> =
                applied.iter().filter(|(n, _)| *n == name).map(|(_, s)| *s).collect();
            prop_assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{}: {:?}", name, seqs);
        }
    }
}

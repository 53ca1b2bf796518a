//! When a worker must stop writing on its own, and the timeouts that make that safe.
//!
//! A worker cut off from the cluster cannot learn that its partitions were given to someone
//! else, so it stops by itself: it may write only while its **lease** runs, counted from its
//! last contact with a majority. That contact time is the moment, by the worker's clock, at
//! which it *sent* a heartbeat whose reply came back from a leader holding a majority; taking
//! the send time rather than the reply's arrival means the contact is never later than the
//! moment the leader recorded that heartbeat.
//!
//! The leader reassigns a worker's partitions once [`crate::failure_detection`] finds it dead
//! with the timeout `reassign_after`, counted from that same heartbeat or later. Because
//! `lease < reassign_after` ([`Timeouts::validate`]), the old owner's lease has run out before
//! the leader reassigns, so two owners never write at once. The gap between the two also
//! absorbs clocks that run at slightly different rates, and writes that were under way when
//! the lease ran out. Checkpoint commits do not depend on this: they are fenced by generation
//! (see [`crate::fencing`]); the lease covers what a worker writes outside the replicated log.

use serde::{Deserialize, Serialize};

use crate::ids::Millis;

/// Whether a worker may still write at `now`: less than `lease` has passed since its last
/// majority contact (both readings of the worker's clock). A contact time later than `now`
/// counts as no time elapsed.
pub fn may_write(now: Millis, last_majority_contact: Millis, lease: Millis) -> bool {
    now.saturating_sub(last_majority_contact) < lease
}

/// The cluster's timing, in milliseconds.
///
/// The defaults aim at a worker failover of at most 2 s at the median: a worker dies on
/// average half a heartbeat interval after its last heartbeat, so the leader finds it dead
/// about `reassign_after − heartbeat_interval / 2` = 1.4 s after the failure; committing the
/// new assignment takes one replication round, and the new owner learns of it within one
/// heartbeat (0.2 s), which leaves about 0.4 s of the 2 s to restore the checkpoint. A lease
/// of 1 s spans five heartbeats, so a healthy worker keeps writing through four lost or late
/// ones, and it ends 0.5 s before the leader reassigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How often a worker sends a heartbeat to the leader.
    pub heartbeat_interval: Millis,
    /// How long after its last majority contact a worker may still write.
    pub lease: Millis,
    /// How long after a worker's last heartbeat (or the leader's taking office) the leader
    /// gives its partitions to others.
    pub reassign_after: Millis,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_interval: 200,
            lease: 1000,
            reassign_after: 1500,
        }
    }
}

/// Timeouts that would let two owners write at once, or stop healthy workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutsError {
    /// Without heartbeats no lease is ever renewed.
    #[error("the heartbeat interval must be more than 0 ms")]
    NoHeartbeat,
    /// The lease must outlast three heartbeat intervals, so that a worker whose heartbeats are
    /// merely late or lost twice in a row keeps writing.
    #[error("a lease of {lease} ms is shorter than three heartbeat intervals of {heartbeat_interval} ms")]
    LeaseTooShort {
        /// The lease.
        lease: Millis,
        /// The heartbeat interval.
        heartbeat_interval: Millis,
    },
    /// The lease must end before the leader reassigns, or the old and the new owner could
    /// both write.
    #[error("a lease of {lease} ms must be shorter than the reassignment timeout of {reassign_after} ms")]
    LeaseOutlastsReassignment {
        /// The lease.
        lease: Millis,
        /// The reassignment timeout.
        reassign_after: Millis,
    },
}

impl Timeouts {
    /// Checks `heartbeat_interval > 0`, `3 × heartbeat_interval ≤ lease` and
    /// `lease < reassign_after`.
    pub fn validate(&self) -> Result<(), TimeoutsError> {
        let Timeouts {
            heartbeat_interval,
            lease,
            reassign_after,
        } = *self;
        if heartbeat_interval == 0 {
            return Err(TimeoutsError::NoHeartbeat);
        }
        if heartbeat_interval
            .checked_mul(3)
            .is_none_or(|three| three > lease)
        {
            return Err(TimeoutsError::LeaseTooShort {
                lease,
                heartbeat_interval,
            });
        }
        if lease >= reassign_after {
            return Err(TimeoutsError::LeaseOutlastsReassignment {
                lease,
                reassign_after,
            });
        }
        Ok(())
    }

    /// [`may_write`] with this lease.
    pub fn may_write(&self, now: Millis, last_majority_contact: Millis) -> bool {
        may_write(now, last_majority_contact, self.lease)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::failure_detection::Heartbeats;
    use crate::ids::NodeId;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Timeouts::default().validate(), Ok(()));
    }

    #[test]
    fn a_lease_runs_for_exactly_its_length() {
        for contact in 0..5 {
            for lease in 0..5 {
                for now in 0..12 {
                    let elapsed = now.max(contact) - contact;
                    assert_eq!(may_write(now, contact, lease), elapsed < lease);
                }
            }
        }
    }

    #[test]
    fn invalid_timeouts_are_refused_with_their_values() {
        let t = |heartbeat_interval, lease, reassign_after| Timeouts {
            heartbeat_interval,
            lease,
            reassign_after,
        };
        assert_eq!(t(0, 1000, 1500).validate(), Err(TimeoutsError::NoHeartbeat));
        assert_eq!(
            t(400, 1000, 1500).validate(),
            Err(TimeoutsError::LeaseTooShort {
                lease: 1000,
                heartbeat_interval: 400
            })
        );
        assert_eq!(
            t(u64::MAX, u64::MAX, u64::MAX).validate(),
            Err(TimeoutsError::LeaseTooShort {
                lease: u64::MAX,
                heartbeat_interval: u64::MAX
            })
        );
        assert_eq!(
            t(200, 1500, 1500).validate(),
            Err(TimeoutsError::LeaseOutlastsReassignment {
                lease: 1500,
                reassign_after: 1500
            })
        );
        assert_eq!(t(200, 600, 601).validate(), Ok(()));
        let message = t(200, 2000, 1500).validate().unwrap_err().to_string();
        assert!(
            message.contains("2000") && message.contains("1500"),
            "{message}"
        );
    }

    /// What the rule `lease < reassign_after` prevents: with a longer lease, an owner the
    /// leader has just reassigned could still write.
    #[test]
    fn a_lease_longer_than_the_reassignment_timeout_would_overlap() {
        let (lease, reassign_after) = (1501, 1500);
        let beats = Heartbeats {
            leader_since: 0,
            last: [(NodeId(1), Some(100))].into(),
        };
        let t = 100 + reassign_after;
        assert_eq!(beats.suspects(t, reassign_after), [NodeId(1)]);
        assert!(may_write(t, 100, lease));
    }

    fn valid_timeouts() -> impl Strategy<Value = Timeouts> {
        (1..400u64)
            .prop_flat_map(|hb| (Just(hb), 3 * hb..4000))
            .prop_flat_map(|(hb, lease)| (Just(hb), Just(lease), lease + 1..6000))
            .prop_map(|(heartbeat_interval, lease, reassign_after)| Timeouts {
                heartbeat_interval,
                lease,
                reassign_after,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// When the leader reassigns at `t` (the worker is dead with `reassign_after`), a worker
        /// whose last majority contact is no later than what the leader counts from (its last
        /// heartbeat the leader saw, or the leader's taking office) may no longer write at `t`.
        #[test]
        fn an_owner_has_stopped_writing_when_the_leader_reassigns(
            timeouts in valid_timeouts(),
            leader_since in 0..5000u64,
            last_seen in proptest::option::of(0..5000u64),
            contact_before in 0..3000u64,
            after in 0..12000u64,
        ) {
            prop_assert_eq!(timeouts.validate(), Ok(()));
            let beats = Heartbeats { leader_since, last: [(NodeId(1), last_seen)].into() };
            let reference = beats.reference(NodeId(1)).unwrap();
            let contact = reference.saturating_sub(contact_before);
            let t = reference + after;
            if beats.suspects(t, timeouts.reassign_after).contains(&NodeId(1)) {
                prop_assert!(!timeouts.may_write(t, contact));
            }
        }

        /// The same invariant from the other side: as long as a worker may write, the leader
        /// does not consider it dead.
        #[test]
        fn a_worker_that_may_write_is_not_suspected(
            timeouts in valid_timeouts(),
            leader_since in 0..5000u64,
            last_seen in proptest::option::of(0..5000u64),
            contact_before in 0..3000u64,
            after in 0..6000u64,
        ) {
            let beats = Heartbeats { leader_since, last: [(NodeId(1), last_seen)].into() };
            let reference = beats.reference(NodeId(1)).unwrap();
            let contact = reference.saturating_sub(contact_before);
            let t = contact + after;
            if timeouts.may_write(t, contact) {
                prop_assert!(beats.suspects(t, timeouts.reassign_after).is_empty());
            }
        }

        #[test]
        fn every_valid_timeout_passes_validation(timeouts in valid_timeouts()) {
            prop_assert_eq!(timeouts.validate(), Ok(()));
        }
    }
}

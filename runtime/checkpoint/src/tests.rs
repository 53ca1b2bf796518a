//! The protocol against a model: a source of numbered rows, tasks that write each epoch's rows
//! to temporary files, a store, and a crash after every possible step (also during recovery).
//! After recovery and a run to the end, the final files must hold every row exactly once.

use std::collections::BTreeMap;

use super::*;

/// An in-memory store with the same contract as [`LocalStore`] (which has its own tests).
#[derive(Default)]
struct MemStore {
    generation: Generation,
    manifests: Vec<Manifest>,
}

impl CheckpointStore for MemStore {
    fn forget(&mut self, _job: &str) -> Result<(), StoreError> {
        // The generation stays: fencing must outlive a restart from scratch.
        self.manifests.clear();
        Ok(())
    }
    fn claim(&mut self, _job: &str) -> Result<Generation, StoreError> {
        self.generation += 1;
        Ok(self.generation)
    }
    fn put_state(
        &mut self,
        _: &str,
        _: Epoch,
        _: TaskId,
        _: &[u8],
    ) -> Result<StateRef, StoreError> {
        unreachable!("the model keeps no state blobs")
    }
    fn get_state(&self, _: &str, _: &StateRef) -> Result<Vec<u8>, StoreError> {
        unreachable!("the model keeps no state blobs")
    }
    fn commit(&mut self, m: &Manifest) -> Result<(), StoreError> {
        if m.generation < self.generation {
            return Err(StoreError::Fenced {
                job: m.job.clone(),
                generation: m.generation,
                current: self.generation,
            });
        }
        self.manifests.push(m.clone());
        Ok(())
    }
    fn latest(&self, _job: &str) -> Result<Option<Manifest>, StoreError> {
        Ok(self.manifests.last().cloned())
    }
}

const JOB: &str = "model";

/// The world that survives a crash: files (name → rows) and the store.
#[derive(Default)]
struct World {
    files: BTreeMap<String, Vec<u64>>,
    store: MemStore,
}

impl World {
    fn temp_files(&self) -> Vec<String> {
        self.files
            .keys()
            .filter(|n| names::parse_temp(n).is_some())
            .cloned()
            .collect()
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::Rename { temp, fin } => {
                if let Some(rows) = self.files.remove(temp) {
                    self.files.insert(fin.clone(), rows);
                } else {
                    assert!(self.files.contains_key(fin), "{fin} lost");
                }
            }
            Action::Delete(t) => {
                self.files.remove(t);
            }
        }
    }
}

/// Counts steps and says when the process "dies".
struct Fuse {
    left: Option<usize>,
}

impl Fuse {
    /// Whether the next step may run.
    fn step(&mut self) -> bool {
        match &mut self.left {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// Runs recovery then the job to `total` rows in epochs of `per_epoch`, over `tasks` tasks;
/// returns false if the fuse blew.
fn run(world: &mut World, tasks: u32, total: u64, per_epoch: u64, fuse: &mut Fuse) -> bool {
    let generation = world.store.claim(JOB).unwrap();
    let last = world.store.latest(JOB).unwrap();
    let rec = recover(JOB, last.as_ref(), &world.temp_files(), generation - 1);
    assert_eq!(rec.generation, generation);
    for a in &rec.actions {
        if !fuse.step() {
            return false;
        }
        world.apply(a);
    }
    let mut next: u64 = rec.sources.get("seq").map_or(0, |o| o.0.as_u64().unwrap());
    let mut c = Coordinator::new(JOB, generation, 0..tasks, rec.committed);
    while next < total {
        let end = (next + per_epoch).min(total);
        let epoch = c
            .start(BTreeMap::from([(
                "seq".to_string(),
                SourceOffset(serde_json::json!(end)),
            )]))
            .unwrap();
        let mut manifest = None;
        for t in 0..tasks {
            let rows: Vec<u64> = (next..end)
                .filter(|r| r % tasks as u64 == t as u64)
                .collect();
            let temp = names::temp_name(JOB, t, epoch, 0, "jsonl");
            if !fuse.step() {
                return false;
            }
            world.files.insert(temp.clone(), rows);
            let fin = names::parse_temp(&temp).unwrap().fin();
            let snapshot = TaskSnapshot {
                pending: vec![PendingFile { temp, fin }],
                state: None,
            };
            manifest = c.ack(t, epoch, snapshot).unwrap();
        }
        let manifest = manifest.expect("every task acknowledged");
        if !fuse.step() {
            return false;
        }
        world.store.commit(&manifest).unwrap();
        for a in c.stored(&manifest) {
            if !fuse.step() {
                return false;
            }
            world.apply(&a);
        }
        next = end;
    }
    true
}

fn committed_rows(world: &World) -> Vec<u64> {
    let mut rows: Vec<u64> = world
        .files
        .iter()
        .filter(|(n, _)| n.starts_with("part-"))
        .flat_map(|(_, r)| r.iter().copied())
        .collect();
    rows.sort_unstable();
    rows
}

#[test]
fn a_crash_after_any_step_loses_and_duplicates_nothing() {
    let (tasks, total, per_epoch) = (3, 20, 6);
    let mut steps = 0;
    loop {
        let mut world = World::default();
        let crashed = !run(
            &mut world,
            tasks,
            total,
            per_epoch,
            &mut Fuse { left: Some(steps) },
        );
        // A second crash at every point of the restart, then a clean run.
        for second in 0..=steps + 4 {
            let mut w = World {
                files: world.files.clone(),
                store: MemStore {
                    generation: world.store.generation,
                    manifests: world.store.manifests.clone(),
                },
            };
            run(
                &mut w,
                tasks,
                total,
                per_epoch,
                &mut Fuse { left: Some(second) },
            );
            assert!(run(
                &mut w,
                tasks,
                total,
                per_epoch,
                &mut Fuse { left: None }
            ));
            assert_eq!(
                committed_rows(&w),
                (0..total).collect::<Vec<_>>(),
                "crash at {steps}, then {second}"
            );
            assert!(
                w.temp_files().is_empty(),
                "temporary files left: {:?}",
                w.temp_files()
            );
        }
        if !crashed {
            break;
        }
        steps += 1;
    }
    // 4 epochs × (3 writes + 1 commit + 3 renames): every one of the 28 steps was a crash point.
    assert_eq!(steps, 28);
}

#[test]
fn recovery_completes_renames_deletes_orphans_of_this_job_only_and_fences() {
    let manifest = Manifest {
        job: JOB.into(),
        generation: 4,
        epoch: 7,
        sources: BTreeMap::from([("seq".into(), SourceOffset(serde_json::json!(70)))]),
        state: BTreeMap::new(),
        pending: vec![PendingFile {
            temp: names::temp_name(JOB, 0, 7, 0, "jsonl"),
            fin: names::final_name(0, 7, 0, "jsonl"),
        }],
    };
    let found = vec![
        names::temp_name(JOB, 0, 7, 0, "jsonl"),
        names::temp_name(JOB, 1, 8, 0, "jsonl"),
        names::temp_name("other-job", 1, 8, 0, "jsonl"),
        "notes.txt".to_string(),
    ];
    let rec = recover(JOB, Some(&manifest), &found, 9);
    assert_eq!(
        rec.actions,
        vec![
            Action::Rename {
                temp: names::temp_name(JOB, 0, 7, 0, "jsonl"),
                fin: names::final_name(0, 7, 0, "jsonl"),
            },
            Action::Delete(names::temp_name(JOB, 1, 8, 0, "jsonl")),
        ]
    );
    assert_eq!(rec.committed, 7);
    assert_eq!(rec.generation, 10);
    assert_eq!(rec.sources["seq"].0, serde_json::json!(70));

    let fresh = recover(JOB, None, &[], 0);
    assert_eq!((fresh.committed, fresh.generation), (0, 1));
    assert!(fresh.actions.is_empty() && fresh.sources.is_empty());
}

#[test]
fn the_coordinator_refuses_protocol_violations() {
    let mut c = Coordinator::new(JOB, 1, [0, 1], 0);
    let snap = || TaskSnapshot {
        pending: Vec::new(),
        state: None,
    };
    assert_eq!(
        c.ack(0, 1, snap()),
        Err(ProtocolError::WrongEpoch {
            task: 0,
            epoch: 1,
            expected: 0
        })
    );
    let e = c.start(BTreeMap::new()).unwrap();
    assert_eq!(e, 1);
    assert_eq!(
        c.start(BTreeMap::new()),
        Err(ProtocolError::InFlight { in_flight: 1 })
    );
    assert_eq!(c.ack(5, 1, snap()), Err(ProtocolError::UnknownTask(5)));
    assert_eq!(c.ack(0, 1, snap()), Ok(None));
    assert_eq!(
        c.ack(0, 1, snap()),
        Err(ProtocolError::Duplicate { task: 0, epoch: 1 })
    );
    let m = c.ack(1, 1, snap()).unwrap().unwrap();
    assert_eq!((m.epoch, m.generation), (1, 1));
    c.stored(&m);
    assert_eq!((c.committed(), c.in_flight()), (1, None));
    assert_eq!(c.start(BTreeMap::new()), Ok(2));
    c.abort();
    // An aborted epoch is started again under the same number.
    assert_eq!(c.start(BTreeMap::new()), Ok(2));
}

mod local_store {
    use super::*;
    use crate::store::KEEP;

    fn manifest(generation: Generation, epoch: Epoch, state: Option<StateRef>) -> Manifest {
        Manifest {
            job: JOB.into(),
            generation,
            epoch,
            sources: BTreeMap::from([("seq".into(), SourceOffset(serde_json::json!(epoch * 10)))]),
            state: state.into_iter().map(|s| (0, s)).collect(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn commits_read_back_survive_reopening_and_keep_the_last_three() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::new(dir.path());
        assert_eq!(s.latest(JOB).unwrap(), None);
        let g = s.claim(JOB).unwrap();
        for epoch in 1..=5 {
            let blob = format!("state after {epoch}").into_bytes();
            let r = s.put_state(JOB, epoch, 0, &blob).unwrap();
            s.commit(&manifest(g, epoch, Some(r))).unwrap();
        }
        let s = LocalStore::new(dir.path());
        let last = s.latest(JOB).unwrap().unwrap();
        assert_eq!(last.epoch, 5);
        assert_eq!(s.get_state(JOB, &last.state[&0]).unwrap(), b"state after 5");
        let job = dir.path().join(JOB);
        let count = |sub: &str, prefix: &str| {
            std::fs::read_dir(job.join(sub))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(prefix)
                })
                .count()
        };
        // Old checkpoints go every KEEP commits: between KEEP and 2·KEEP − 1 are kept.
        assert!((KEEP..2 * KEEP).contains(&count("", "manifest-")));
        assert_eq!(count("state", ""), count("", "manifest-"));
    }

    #[test]
    fn forgetting_a_job_drops_its_checkpoints_but_still_fences_its_old_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::new(dir.path());
        let old = s.claim(JOB).unwrap();
        let r = s.put_state(JOB, 1, 0, b"state").unwrap();
        s.commit(&manifest(old, 1, Some(r))).unwrap();
        s.forget(JOB).unwrap();
        let mut reopened = LocalStore::new(dir.path());
        assert_eq!(reopened.latest(JOB).unwrap(), None);
        let new = reopened.claim(JOB).unwrap();
        assert!(new > old, "a new run's generation {new} must exceed {old}");
        // A writer of the forgotten run cannot commit into the new one.
        assert!(matches!(
            reopened.commit(&manifest(old, 1, None)),
            Err(StoreError::Fenced { .. })
        ));
        reopened.commit(&manifest(new, 1, None)).unwrap();
        // Forgetting a job that has nothing is fine.
        reopened.forget("never-ran").unwrap();
    }

    #[test]
    fn an_older_generation_is_fenced_and_epochs_only_advance() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::new(dir.path());
        let old = s.claim(JOB).unwrap();
        let new = s.claim(JOB).unwrap();
        assert!(new > old);
        let err = s.commit(&manifest(old, 1, None)).unwrap_err();
        assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
        s.commit(&manifest(new, 2, None)).unwrap();
        s.commit(&manifest(new, 2, None)).unwrap(); // the same commit again: a no-op
        let err = s.commit(&manifest(new, 1, None)).unwrap_err();
        assert!(
            err.to_string()
                .contains("not after the last committed checkpoint 2"),
            "{err}"
        );
        assert_eq!(s.generation(JOB).unwrap(), 2);
    }

    #[test]
    fn a_damaged_manifest_or_state_blob_is_reported_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LocalStore::new(dir.path());
        let g = s.claim(JOB).unwrap();
        let r = s.put_state(JOB, 1, 0, b"counts").unwrap();
        s.commit(&manifest(g, 1, Some(r.clone()))).unwrap();

        let blob = dir.path().join(JOB).join(&r.key);
        std::fs::write(&blob, b"cOunts").unwrap();
        let err = s.get_state(JOB, &r).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("SHA-256") && err.contains(&r.key),
            "{err}"
        );
        std::fs::write(&blob, b"count").unwrap();
        let err = s.get_state(JOB, &r).unwrap_err().to_string();
        assert!(err.contains("5 bytes, the manifest says 6"), "{err}");

        let path = dir
            .path()
            .join(JOB)
            .join(format!("manifest-{:020}.ckpt", 1));
        let good = std::fs::read(&path).unwrap();
        // Every single-byte change of the body, and a truncation, is caught.
        let body_start = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        for i in (body_start..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let err = s.latest(JOB).unwrap_err().to_string();
            assert!(
                err.contains("damaged") && err.contains("manifest-"),
                "byte {i}: {err}"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(s.latest(JOB).is_err());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(s.latest(JOB).unwrap().unwrap().epoch, 1);
    }
}

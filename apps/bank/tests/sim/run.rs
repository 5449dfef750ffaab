//! One seed, step by step: what happens, and the checks after it.

use crate::sim::checks::{all_events, check_acknowledged, check_books, compare, dump, fresh};
use crate::sim::faults::Outage;
use crate::sim::workload::Users;
use crate::sim::world::{Backend, Delivered, Shape, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind::dead_letters;
use rewind::{
    ConsumerKind, ErrorPolicy, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent, SubscriptionError,
};
use std::hash::{DefaultHasher, Hash, Hasher};
use uuid::Uuid;

/// What one seed did.
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub violations: Vec<String>,
    /// A digest of the final log and the violations: equal runs of one seed agree.
    pub digest: u64,
}

fn shape(seed: u64) -> (Shape, bool) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let corrupt = rng.random_range(0..5) == 0;
    let skip = corrupt || rng.random_bool(0.4);
    let shape = Shape {
        backend: if seed % 4 == 3 { Backend::Sqlite } else { Backend::Memory },
        cache_capacity: rng.random_range(1..6),
        snapshot_every: rng.random_range(2..6),
        projector_policy: if skip { ErrorPolicy::Skip } else { ErrorPolicy::default() },
        manager_policy: if corrupt { ErrorPolicy::Skip } else { ErrorPolicy::default() },
        projector_bug_rate: if skip && rng.random_bool(0.5) { 0.03 } else { 0.0 },
    };
    (shape, corrupt)
}

struct Sim {
    world: World,
    users: Users,
    violations: Vec<String>,
    corrupt: bool,
    /// Positions of undecodable events of a type the transfer process handles.
    corrupted: Vec<GlobalPosition>,
    outage_left: u32,
    step: u64,
}

pub async fn run(seed: u64, steps: u64) -> Report {
    let (shape, corrupt) = shape(seed);
    let mut sim = Sim {
        world: World::new(seed, shape).await,
        users: Users::default(),
        violations: Vec::new(),
        corrupt,
        corrupted: Vec::new(),
        outage_left: 0,
        step: 0,
    };
    for step in 0..steps {
        sim.step = step;
        sim.one_step().await;
        if step % 40 == 39 {
            sim.settle_and_check().await;
        }
        if !sim.violations.is_empty() {
            break;
        }
    }
    if sim.violations.is_empty() {
        sim.settle_and_check().await;
    }
    let events = all_events(&sim.world.raw_store().await).await;
    let mut hasher = DefaultHasher::new();
    if let Ok(path) = std::env::var("REWIND_SIM_TRACE") {
        let lines: Vec<String> = events
            .iter()
            .map(|e| format!("{} {} {} {}", e.stream_id, e.stream_version.0, e.event_type, e.data))
            .collect();
        std::fs::write(path, lines.join("\n")).expect("trace");
    }
    for event in &events {
        (&event.stream_id, event.stream_version.0, &event.event_type, &event.data).hash(&mut hasher);
    }
    sim.violations.hash(&mut hasher);
    Report { seed, steps: sim.step + 1, violations: sim.violations, digest: hasher.finish() }
}

impl Sim {
    fn note(&mut self, found: Vec<String>) {
        let step = self.step;
        self.violations.extend(found.into_iter().map(|v| format!("step {step}: {v}")));
    }

    async fn one_step(&mut self) {
        let roll = self.world.rng.random_range(0..100);
        match roll {
            0..=37 => {
                let app = self.world.live().app.clone();
                let found = self.users.send_new(&app, &mut self.world.rng).await;
                self.note(found);
            }
            38..=42 => {
                let app = self.world.live().app.clone();
                let found = self.users.repeat(&app, &mut self.world.rng).await;
                self.note(found);
            }
            43..=44 => {
                let app = self.world.live().app.clone();
                let found = self.users.reuse(&app, &mut self.world.rng).await;
                self.note(found);
            }
            45..=69 => {
                let index = self.world.rng.random_range(0..3);
                let batch = self.world.rng.random_range(1..40);
                self.deliver(index, batch).await;
            }
            70..=73 => self.redeliver().await,
            74..=76 => self.world.crash().await,
            77..=79 => {
                if self.outage_left == 0 {
                    self.outage_left = self.world.rng.random_range(3..12);
                    let kind = if self.world.rng.random_bool(0.5) { Outage::Everything } else { Outage::Writes };
                    self.world.faults.set_outage(Some(kind));
                }
            }
            80..=81 => {
                let rate = [0.0, 0.05, 0.2][self.world.rng.random_range(0..3)];
                self.world.faults.set_rate(rate);
            }
            82 if self.corrupt => self.corrupt_event().await,
            83..=84 => self.rebuild().await,
            85..=86 => self.replay_dead_letter().await,
            87..=88 => self.copy_and_check().await,
            89..=95 => self.burst().await,
            _ => {
                let index = self.world.rng.random_range(0..3);
                self.deliver(index, 500).await;
            }
        }
        // A runner retries a failed event on its own, again and again, while the
        // world goes on: each step is one more try.
        for index in 0..3 {
            let sub = &self.world.live().subs[index];
            if sub.attempts > 0 || sub.retrying {
                self.deliver(index, 40).await;
            }
        }
        if self.outage_left > 0 {
            self.outage_left -= 1;
            if self.outage_left == 0 {
                self.world.faults.set_outage(None);
            }
        }
    }

    async fn deliver(&mut self, index: usize, batch: usize) {
        let faults = self.world.faults.clone();
        let delivered = self.world.live().deliver(index, batch, &faults).await;
        self.judge_delivery(index, delivered);
    }

    /// Only deterministic failures may take the error policy.
    fn judge_delivery(&mut self, index: usize, delivered: Delivered) {
        if let Some(why) = delivered.dead_lettered_by_fault {
            self.note(vec![format!("a transient fault took the dead-letter policy: {why}")]);
        }
        if delivered.stopped_by_fault == Some(true) {
            let sub = &self.world.live().subs[index];
            let why = sub.stopped.clone().unwrap_or_default();
            let name = sub.name.clone();
            self.note(vec![format!("subscription {name} stopped by a transient fault: {why}")]);
        }
    }

    async fn redeliver(&mut self) {
        let index = self.world.rng.random_range(0..3);
        let checkpoint = match self.world.live().subs[index].consumer.checkpoint().await {
            Ok(Some(position)) => position.0,
            _ => return,
        };
        let from = GlobalPosition(self.world.rng.random_range(1..=checkpoint.max(1)));
        let batch = self.world.rng.random_range(1..30);
        self.world.live().redeliver(index, from, batch).await;
    }

    /// An event of a type the transfer process handles, that no version of it can read.
    async fn corrupt_event(&mut self) {
        let store = self.world.raw_store().await;
        let event = NewEvent {
            event_id: Uuid::from_u128(self.world.rng.random()),
            event_type: "WithdrawnFromAccount".into(),
            data: r#"{"garbled": true}"#.into(),
            metadata: Metadata::default(),
        };
        let stream = format!("account-corrupt-{}", self.corrupted.len());
        if let Ok(appended) = store.append(&stream, ExpectedVersion::NoStream, vec![event]).await {
            self.corrupted.push(appended.last_position);
        }
    }

    /// An operator rebuilds a projector in the running application (its
    /// subscription is halted, reset and restarted, as `Subscriptions::rebuild` does).
    async fn rebuild(&mut self) {
        let live = self.world.live();
        let projectors: Vec<usize> =
            (0..live.subs.len()).filter(|&i| live.subs[i].kind() == ConsumerKind::Projector).collect();
        let index = projectors[self.world.rng.random_range(0..projectors.len())];
        let live = self.world.live();
        let bookkeeping = live.bookkeeping.clone();
        let sub = &mut live.subs[index];
        if dead_letters::reset_projector(&sub.name, sub.consumer.as_ref(), bookkeeping.as_ref()).await.is_ok() {
            sub.attempts = 0;
            sub.stopped = None;
        }
    }

    /// An operator replays one dead letter (by the rules of `rewind::dead_letters`).
    async fn replay_dead_letter(&mut self) {
        let live = self.world.live();
        let Ok(letters) = live.bookkeeping.dead_letters(None).await else { return };
        if letters.is_empty() {
            return;
        }
        let letter = letters[self.world.rng.random_range(0..letters.len())].clone();
        replay_letter(self.world.live(), &letter).await;
    }

    /// Several commands and a turn of the transfer process at once.
    async fn burst(&mut self) {
        let app = self.world.live().app.clone();
        let n = self.world.rng.random_range(2..6);
        let mut commands = Vec::new();
        for _ in 0..n {
            let command = self.users.next(&mut self.world.rng);
            let id = self.world.rng.random_bool(0.6).then(|| Uuid::from_u128(self.world.rng.random()));
            commands.push((id, command));
        }
        let faults = self.world.faults.clone();
        let live = self.world.live.as_mut().expect("running");
        let answers = if self.world.shape.backend == Backend::Memory {
            let sends = futures_util::future::join_all(commands.iter().map(|(id, c)| c.send(&app, *id)));
            tokio::join!(sends, live.deliver(1, 20, &faults))
        } else {
            // The SQLite writer is a thread: concurrent work would finish in an order
            // that thread timing decides, and the seed would not replay exactly.
            let mut answers = Vec::new();
            for (id, command) in &commands {
                answers.push(command.send(&app, *id).await);
            }
            let delivered = live.deliver(1, 20, &faults).await;
            (answers, delivered)
        };
        let (answers, delivered) = answers;
        self.judge_delivery(1, delivered);
        for ((id, command), answer) in commands.into_iter().zip(answers) {
            if let Some(id) = id {
                self.users.sent.push((id, command));
                let found = self.users.judge(id, answer);
                self.note(found);
            }
        }
    }

    /// Delivers everything with faults off until nothing moves, then checks it all.
    async fn settle_and_check(&mut self) {
        let found = settle(&mut self.world).await;
        self.note(found);
        let events = all_events(&self.world.raw_store().await).await;
        let mut found = check_books(&events, true);
        found.extend(check_acknowledged(&events, &self.users));
        found.extend(self.check_corrupted().await);
        let model = self.world.live().model.clone();
        found.extend(compare("live read model", &dump(&model), &fresh(&events).await));
        self.note(found);
    }

    /// The transfer process never passes over an event of its type unread without a
    /// dead letter saying so.
    async fn check_corrupted(&mut self) -> Vec<String> {
        let live = self.world.live();
        let manager = &live.subs[1];
        let checkpoint = manager.consumer.checkpoint().await.ok().flatten().unwrap_or(GlobalPosition::START);
        let letters = live.bookkeeping.dead_letters(Some(&manager.name)).await.unwrap_or_default();
        self.corrupted
            .iter()
            .filter(|&&p| p <= checkpoint && !letters.iter().any(|l| l.event.position == p))
            .map(|p| format!("transfer process passed over undecodable event {p} without a dead letter"))
            .collect()
    }

    /// Copies a prefix of the log into a new store and serves it: its transfer
    /// process finishes what was in flight, and its books must hold.
    async fn copy_and_check(&mut self) {
        let events = all_events(&self.world.raw_store().await).await;
        if events.is_empty() {
            return;
        }
        let until = self.world.rng.random_range(1..=events.len());
        let copy_shape = Shape { backend: Backend::Memory, projector_bug_rate: 0.0, ..self.world.shape.clone() };
        let mut copy = World::new(self.world.rng.random(), copy_shape).await;
        let memory = copy.durable.memory.clone().expect("memory copy");
        if let Err(error) = memory.import(events[..until].to_vec()).await {
            return self.note(vec![format!("copy import failed: {error}")]);
        }
        let mut found = settle(&mut copy).await;
        let copied = all_events(&copy.raw_store().await).await;
        found.extend(check_books(&copied, true).into_iter().map(|v| format!("copy of 1..={until}: {v}")));
        let model = copy.live().model.clone();
        found.extend(compare(&format!("copy of 1..={until}"), &dump(&model), &fresh(&copied).await));
        self.note(found);
    }
}

/// Delivers every subscription with faults off until a whole round moves nothing;
/// then replays the dead letters of the projectors (an operator clearing them).
async fn settle(world: &mut World) -> Vec<String> {
    world.faults.set_rate(0.0);
    world.faults.set_outage(None);
    world.bugs.store(false, std::sync::atomic::Ordering::Relaxed);
    let faults = world.faults.clone();
    let mut violations = Vec::new();
    for _round in 0..500 {
        let mut moved = 0;
        for index in 0..3 {
            moved += usize::from(world.live().deliver(index, 500, &faults).await.moved());
        }
        let retrying = world.live().subs.iter().any(|s| (s.attempts > 0 || s.retrying) && s.stopped.is_none());
        if moved == 0 && !retrying {
            break;
        }
    }
    let live = world.live();
    for letter in live.bookkeeping.dead_letters(None).await.unwrap_or_default() {
        if std::env::var("REWIND_SIM_DEBUG").is_ok() {
            eprintln!("dead letter of {} at {}: {}", letter.subscription, letter.event.position, letter.error);
        }
    }
    for sub in &live.subs {
        if let Some(why) = &sub.stopped {
            violations.push(format!("subscription {} is stopped after settling: {why}", sub.name));
        }
    }
    let letters = live.bookkeeping.dead_letters(None).await.unwrap_or_default();
    let mut replayed = false;
    for letter in letters {
        if letter.event.decode::<bank::domain::AccountEvent>().is_ok() {
            replayed |= replay_letter(world.live(), &letter).await;
        }
    }
    // A projector rebuilt for its letters catches up again.
    if replayed {
        for _round in 0..50 {
            let mut moved = 0;
            for index in 0..3 {
                moved += usize::from(world.live().deliver(index, 500, &faults).await.moved());
            }
            if moved == 0 {
                break;
            }
        }
    }
    world.bugs.store(true, std::sync::atomic::Ordering::Relaxed);
    violations
}

/// Replays a dead letter as an operator does: a projector's by rebuilding it (what
/// `Subscriptions::replay_dead_letter` does), any other's by handing the event over.
/// Whether a projector was rebuilt.
async fn replay_letter(live: &mut crate::sim::world::Live, letter: &rewind::DeadLetter) -> bool {
    let bookkeeping = live.bookkeeping.clone();
    let Some(sub) = live.subs.iter_mut().find(|s| s.name == letter.subscription) else { return false };
    match dead_letters::replay(letter, sub.consumer.as_ref(), bookkeeping.as_ref()).await {
        Err(SubscriptionError::ReplayByRebuild(_)) => {
            let rebuilt = dead_letters::reset_projector(&sub.name, sub.consumer.as_ref(), bookkeeping.as_ref()).await;
            sub.attempts = 0;
            sub.stopped = None;
            rebuilt.is_ok()
        }
        _ => false,
    }
}

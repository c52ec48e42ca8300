//! Generations: a deploy, or a restart that rolls like one, starts a new
//! generation of slots beside the old one, and the old web dynos serve until
//! the new ones are up.
//!
//! Separate from `slots` because only here do two generations overlap.

use std::sync::Arc;

use crew_procfile::Formation;
use crew_runtime::Runtime;

use super::{AfterRun, Engine, SlotKey, WEB};
use crate::{AppSpec, DynoState, Ports};

impl<R: Runtime> Engine<R> {
    /// Whether an older generation's web dynos may go: the current
    /// generation's web dynos that are wanted (none, after `scale web=0`) are
    /// all past starting, so during a deploy requests go to the old dynos
    /// until the new ones are up (or have crashed).
    pub(super) fn web_handoff_ready(&self) -> bool {
        let wanted = self.formation.get(WEB).unwrap_or(0);
        self.slots
            .iter()
            .filter(|((g, _, n), s)| {
                *g == self.generation
                    && s.is_web()
                    && *n <= wanted
                    && s.after_run != AfterRun::Remove
            })
            .all(|(_, s)| s.state != DynoState::Starting)
    }

    /// Whether a restart replaces this dyno as a deploy does, a new run beside
    /// the old one that serves until the new one is up, rather than stopping it
    /// first: an `up` web dyno of the current release on a server, whose
    /// dynos drain their requests and take their ports from a pool (two runs
    /// of `web.1` cannot share the fixed port `crew start` gives it).
    pub(super) fn rolls(&self, key: SlotKey) -> bool {
        self.config.drain_requests
            && matches!(self.app.ports, Ports::Pool(_))
            && key.0 == self.generation
            && self.slots.get(&key).is_some_and(|s| {
                s.is_web()
                    && s.state == DynoState::Up
                    && s.run.is_some()
                    && s.after_run == AfterRun::Decide
                    && !s.draining
                    && !s.stopping
            })
    }

    /// Restarts the web dynos `keys` the way a deploy replaces them: every
    /// other slot of the current generation moves, as it is, to a new one, so
    /// that reconcile starts a new run for each of `keys` there and retires
    /// the old ones once the new ones are past starting. Without this a
    /// restart of the whole app, or of `web`, left no dyno to route to until
    /// the new ones were up.
    pub(super) fn roll(&mut self, keys: &[SlotKey]) {
        let old = self.generation;
        self.generation += 1;
        let moving: Vec<SlotKey> = self
            .slots
            .keys()
            .filter(|k| k.0 == old && !keys.contains(k))
            .copied()
            .collect();
        for key in moving {
            if let Some(slot) = self.slots.remove(&key) {
                self.slots.insert((self.generation, key.1, key.2), slot);
            }
        }
        self.reconcile();
    }

    pub(super) fn deploy(&mut self, app: AppSpec, formation: Formation) {
        if self.shutdown.is_some() {
            return;
        }
        let same_release = app.release.is_some()
            && app.release == self.app.release
            && app.env == self.app.env
            && app.cwd == self.app.cwd
            && app.command_prefix == self.app.command_prefix;
        let old = self.generation;
        self.generation += 1;
        self.types = app.types.iter().cloned().map(Arc::new).collect();
        self.app = app;
        self.formation = formation;
        if same_release {
            self.carry_over(old);
        }
        // The new generation starts; every slot of the old one is retired.
        self.reconcile();
    }

    /// Moves the running dynos of generation `old` whose type is the same in
    /// the new one into it, so that they keep running: applying the same
    /// release with one type resized restarts that type only.
    pub(super) fn carry_over(&mut self, old: u32) {
        let keys: Vec<SlotKey> = self
            .slots
            .iter()
            .filter(|((g, _, _), s)| {
                *g == old
                    && s.after_run == AfterRun::Decide
                    && !s.draining
                    && !s.stopping
                    && !s.waiting
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            let Some((index, spec)) = self
                .types
                .iter()
                .enumerate()
                .find(|(_, t)| t.name == slot.spec.name)
            else {
                continue;
            };
            if **spec != *slot.spec {
                continue;
            }
            let spec = spec.clone();
            if let Some(mut slot) = self.slots.remove(&key) {
                slot.spec = spec;
                self.slots.insert((self.generation, index, key.2), slot);
            }
        }
    }
}

//! The formation's slots: which exist, and what `scale`, `restart` and
//! `stop` do to them.
//!
//! Separate from `runs` because this decides *whether* a slot should run
//! (the formation, the targets a request names); `runs` carries one run out.

use std::sync::Arc;
use std::time::SystemTime;

use crew_logs::LogEvent;
use crew_procfile::{Formation, FormationChange};
use crew_runtime::Runtime;

use super::{AfterRun, Engine, Slot, SlotKey};
use crate::restart::Backoff;
use crate::{DynoState, EngineError};

impl<R: Runtime> Engine<R> {
    pub(super) fn scale(&mut self, changes: &[FormationChange]) -> Result<Formation, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        let mut formation = self.formation.clone();
        formation.apply(changes)?;
        // Ports are checked before anything changes, so a bad scale changes nothing.
        if let Some(base) = self.app.ports.base() {
            for (index, spec) in self.app.types.iter().enumerate() {
                let quantity = formation.get(&spec.name).unwrap_or(0);
                if quantity > 0 {
                    crew_procfile::port_for(base, index, quantity).map_err(|e| {
                        EngineError::Port {
                            dyno: format!("{}.{quantity}", spec.name),
                            reason: e.to_string(),
                        }
                    })?;
                }
            }
        }
        // A type scaled to zero forgets its crash history.
        self.formation = formation;
        self.reconcile();
        Ok(self.formation.clone())
    }

    /// Starts missing slots and stops surplus ones, highest numbers first.
    pub(super) fn reconcile(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let wanted: Vec<u32> = self
            .app
            .types
            .iter()
            .map(|t| self.formation.get(&t.name).unwrap_or(0))
            .collect();
        let generation = self.generation;
        // New slots first: whether old web dynos may go depends on the new
        // ones, which must exist (and be starting) before that is asked.
        for (type_index, quantity) in wanted.iter().enumerate() {
            for number in 1..=*quantity {
                let key = (generation, type_index, number);
                match self.slots.get_mut(&key) {
                    // A slot still being retired by an earlier scale-down comes back.
                    Some(slot) if slot.after_run == AfterRun::Remove => {
                        slot.after_run = AfterRun::Restart
                    }
                    Some(_) => {}
                    None => self.add_slot(type_index, number),
                }
            }
        }
        let handoff = self.web_handoff_ready();
        let surplus: Vec<SlotKey> = self
            .slots
            .iter()
            .rev()
            .filter(|((g, i, n), s)| {
                if *g != generation {
                    // Old web dynos serve until the new ones are up.
                    !s.is_web() || handoff
                } else {
                    wanted.get(*i).is_none_or(|q| n > q)
                }
            })
            .map(|(k, _)| *k)
            .collect();
        for key in surplus {
            self.retire(key);
        }
    }

    /// Stops a slot for good and drops it once its run is over.
    pub(super) fn retire(&mut self, key: SlotKey) {
        match self.slots.get(&key).map(|s| s.run.is_some()) {
            Some(true) => self.stop_slot(key, AfterRun::Remove),
            Some(false) => {
                self.slots.remove(&key);
            }
            None => {}
        }
    }

    pub(super) fn add_slot(&mut self, type_index: usize, number: u32) {
        let Some(spec) = self.types.get(type_index).cloned() else {
            return;
        };
        let name: Arc<str> = Arc::from(format!("{}.{number}", spec.name));
        let port = match self.app.ports.base() {
            Some(base) => match crew_procfile::port_for(base, type_index, number) {
                Ok(port) => Some(port),
                Err(e) => {
                    self.pending
                        .push(LogEvent::system(format!("cannot start {name}: {e}")));
                    return;
                }
            },
            None => None,
        };
        let key = (self.generation, type_index, number);
        self.slots.insert(
            key,
            Slot {
                spec,
                release: self.app.release,
                number,
                name,
                port,
                address: std::net::Ipv4Addr::LOCALHOST.into(),
                state: DynoState::Down,
                since: SystemTime::now(),
                up_at: None,
                pid: None,
                run: None,
                after_run: AfterRun::Decide,
                backoff: Backoff::default(),
                restarts: 0,
                restart_at: None,
                draining: false,
                stopping: false,
                waiting: false,
                requests: Arc::default(),
            },
        );
        if self.older_twin_running(key) {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.waiting = true;
            }
        } else {
            self.launch(key);
        }
    }

    /// Whether an older release's dyno of the same name still runs, for a
    /// dyno that is not web: as on Heroku, the old one stops before the new
    /// one starts, so `crew logs --ps worker.2` shows one run after the other.
    /// Web dynos overlap instead, so that requests always find one up.
    pub(super) fn older_twin_running(&self, key: SlotKey) -> bool {
        let Some(slot) = self.slots.get(&key) else {
            return false;
        };
        !slot.is_web()
            && self
                .slots
                .iter()
                .any(|((g, _, _), s)| *g < key.0 && s.name == slot.name && s.run.is_some())
    }

    /// Starts the dynos that waited for an older twin now gone.
    pub(super) fn launch_waiting(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let ready: Vec<SlotKey> = self
            .slots
            .iter()
            .filter(|(_, s)| {
                s.waiting
                    && s.run.is_none()
                    && matches!(s.after_run, AfterRun::Decide | AfterRun::Restart)
            })
            .map(|(k, _)| *k)
            .filter(|k| !self.older_twin_running(*k))
            .collect();
        for key in ready {
            self.launch(key);
        }
    }

    /// The slots a target names: `web.2`, `web`, or all of them.
    pub(super) fn targets(&self, target: Option<&str>) -> Result<Vec<SlotKey>, EngineError> {
        let keys: Vec<SlotKey> = self
            .slots
            .iter()
            .filter(|(_, s)| s.after_run != AfterRun::Remove)
            .filter(|(_, s)| match target {
                None => true,
                Some(t) => &*s.name == t || s.spec.name == t,
            })
            .map(|(k, _)| *k)
            .collect();
        match target {
            Some(t) if keys.is_empty() => Err(EngineError::UnknownDyno(t.to_string())),
            _ => Ok(keys),
        }
    }

    pub(super) fn restart(&mut self, target: Option<&str>) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        // A one-off is not restarted, as on Heroku: restarting it ends it.
        if let Some(stopped) = target.and_then(|t| self.stop_one_offs(t)) {
            return Ok(stopped);
        }
        let keys = self.targets(target)?;
        let mut names = Vec::new();
        let mut rolling = Vec::new();
        for key in keys {
            let rolls = self.rolls(key);
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            slot.backoff.reset();
            let name = slot.name.clone();
            let running = slot.run.is_some();
            // An older release's web dyno is being replaced already, and
            // serves until its replacement is up.
            let replaced = key.0 != self.generation && slot.is_web();
            self.log_lifecycle(&name, "Restarting");
            if replaced {
                continue;
            } else if rolls {
                rolling.push(key);
            } else if running {
                self.stop_slot(key, AfterRun::Restart);
            } else {
                self.launch(key);
            }
        }
        if !rolling.is_empty() {
            self.roll(&rolling);
        }
        Ok(names)
    }

    pub(super) fn stop(&mut self, target: &str) -> Result<Vec<String>, EngineError> {
        if self.shutdown.is_some() {
            return Err(EngineError::ShuttingDown);
        }
        if let Some(stopped) = self.stop_one_offs(target) {
            return Ok(stopped);
        }
        let keys = self.targets(Some(target))?;
        let mut names = Vec::new();
        for key in keys {
            let Some(slot) = self.slots.get(&key) else {
                continue;
            };
            names.push(slot.name.to_string());
            if slot.run.is_some() {
                self.stop_slot(key, AfterRun::StayDown);
            } else {
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.restart_at = None;
                    slot.after_run = AfterRun::StayDown;
                }
                self.set_state(key, DynoState::Down);
            }
        }
        Ok(names)
    }
}

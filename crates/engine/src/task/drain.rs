//! Stopping a slot, and draining a web dyno first: it leaves the router's
//! list, its requests under way finish (or `DRAIN_LIMIT` passes), and only
//! then does its stop signal go out.
//!
//! Also what the router sees (`publish_backends`), since a draining dyno is
//! exactly the one that list must leave out.

use std::sync::Arc;
use std::time::Duration;

use crew_runtime::Runtime;
use tokio::time::Instant;

use super::{AfterRun, Engine, Message, SlotKey};
use crate::dyno::Control;
use crate::{DynoState, TypeSettings, WebBackend};

/// The longest a web dyno's stop waits for its requests to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
const DRAIN_POLL: Duration = Duration::from_millis(20);

impl<R: Runtime> Engine<R> {
    /// The one way a run is told to stop: its type's signal, then SIGKILL
    /// after its type's timeout or the engine's. A one-off has no type and
    /// stops as one with no settings does (`TypeSettings::default()`).
    pub(super) fn stop_control(&self, settings: &TypeSettings) -> Control {
        Control::Stop {
            signal: settings.stop_signal,
            timeout: settings.stop_timeout.unwrap_or(self.config.stop_timeout),
        }
    }

    /// Asks a slot's run to stop; `after_run` says what happens after. A web dyno
    /// first leaves the router and finishes its requests.
    pub(super) fn stop_slot(&mut self, key: SlotKey, after_run: AfterRun) {
        let drain = self.config.drain_requests;
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        slot.after_run = after_run;
        slot.restart_at = None;
        let Some(run_id) = slot.run.as_ref().map(|r| r.id) else {
            return;
        };
        if slot.draining || slot.stopping {
            return;
        }
        match (drain, slot.port, slot.is_web()) {
            (true, Some(_), true) => {
                slot.draining = true;
                let messages = self.messages_tx.clone();
                let requests = slot.requests.clone();
                // Out of the rotation before its count is looked at: a router
                // counts a request, then checks the dyno is still in it.
                self.publish_backends();
                tokio::spawn(async move {
                    let deadline = Instant::now() + DRAIN_LIMIT;
                    // The router may still be picking this dyno for a request
                    // that started before it saw the change.
                    tokio::time::sleep(DRAIN_POLL).await;
                    while requests.get() > 0 && Instant::now() < deadline {
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                    let _ = messages.send(Message::Drained(run_id));
                });
            }
            _ => self.send_stop(key),
        }
    }

    pub(super) fn drained(&mut self, run_id: u64) {
        if let Some(key) = self.slot_of_run(run_id) {
            self.send_stop(key);
        }
    }

    pub(super) fn send_stop(&mut self, key: SlotKey) {
        let Some(slot) = self.slots.get_mut(&key) else {
            return;
        };
        if slot.stopping {
            return;
        }
        slot.stopping = slot.run.is_some();
        let Some(slot) = self.slots.get(&key) else {
            return;
        };
        let signal = slot.spec.settings.stop_signal;
        let control = self.stop_control(&slot.spec.settings);
        let name = slot.name.clone();
        if let Some(run) = &slot.run {
            let _ = run.control.send(control);
            self.log_lifecycle(&name, format!("Stopping all processes with {signal}"));
        }
    }

    /// What a router may use, published whenever it changes. A draining dyno
    /// takes no requests: one that restarts shows as starting, so requests wait
    /// for it; one that goes for good, and a stopped one, are left out.
    pub(super) fn publish_backends(&mut self) {
        let backends: Vec<WebBackend> = self
            .slots
            .values()
            .filter(|s| s.is_web() && s.state != DynoState::Down)
            .filter_map(|s| {
                let leaving = s.after_run == AfterRun::Remove
                    || (s.draining && s.after_run == AfterRun::StayDown);
                if leaving {
                    return None;
                }
                let state = if s.draining {
                    DynoState::Starting
                } else {
                    s.state
                };
                Some(WebBackend {
                    name: s.name.to_string(),
                    // A crashed dyno between runs has no port; only `up` ones are
                    // ever connected to, and they always have one.
                    addr: (s.address, s.port.unwrap_or(0)).into(),
                    state,
                    namespace: None,
                    requests: s.requests.clone(),
                })
            })
            .collect();
        self.backends.send_if_modified(|current| {
            if **current == backends {
                false
            } else {
                *current = Arc::new(backends);
                true
            }
        });
    }
}

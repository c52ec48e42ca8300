//! The end of a run: every dyno asked to stop (SIGTERM or the type's own
//! signal), or all of them SIGKILLed. The run loop ends once none is left.

use crew_logs::LogEvent;
use crew_runtime::{Runtime, Signal};

use super::{Engine, SlotKey, AfterRun};
use crate::ShutdownReason;
use crate::dyno::Control;

impl<R: Runtime> Engine<R> {
    pub(super) fn begin_shutdown(&mut self, reason: ShutdownReason) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(reason);
        self.exit_code.get_or_insert(reason.exit_code());
        self.pending
            .push(LogEvent::system("sending SIGTERM to all processes"));
        for one_off in self.one_offs.values() {
            if let Some(run) = &one_off.run {
                let _ = run.control.send(Control::Stop {
                    signal: Signal::Term,
                    timeout: self.config.stop_timeout,
                });
            }
        }
        let keys: Vec<SlotKey> = self.slots.keys().copied().collect();
        for key in keys {
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.restart_at = None;
                let control = Control::Stop {
                    signal: slot.spec.settings.stop_signal,
                    timeout: slot
                        .spec
                        .settings
                        .stop_timeout
                        .unwrap_or(self.config.stop_timeout),
                };
                if let Some(run) = &slot.run {
                    let _ = run.control.send(control);
                }
            }
        }
    }

    pub(super) fn kill_all(&mut self) {
        self.pending
            .push(LogEvent::system("sending SIGKILL to all processes"));
        if self.shutdown.is_none() {
            self.shutdown = Some(ShutdownReason::Signal(Signal::Int));
            self.exit_code.get_or_insert(130);
        }
        for one_off in self.one_offs.values() {
            if let Some(run) = &one_off.run {
                let _ = run.control.send(Control::Kill);
            }
        }
        for slot in self.slots.values_mut() {
            slot.after_run = AfterRun::Remove;
            slot.restart_at = None;
            if let Some(run) = &slot.run {
                let _ = run.control.send(Control::Kill);
            }
        }
    }
}

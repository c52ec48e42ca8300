//! The end of a run: every dyno asked to stop (SIGTERM or the type's own
//! signal), or all of them SIGKILLed. The run loop ends once none is left.

use crew_logs::LogEvent;
use crew_runtime::{Runtime, Signal};

use super::{AfterRun, Engine};
use crate::dyno::Control;
use crate::{ShutdownReason, TypeSettings};

impl<R: Runtime> Engine<R> {
    pub(super) fn begin_shutdown(&mut self, reason: ShutdownReason) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(reason);
        self.exit_code.get_or_insert(reason.exit_code());
        self.pending
            .push(LogEvent::system("sending SIGTERM to all processes"));
        let one_off = TypeSettings::default();
        for run in self.one_offs.values().filter_map(|o| o.run.as_ref()) {
            let _ = run.control.send(self.stop_control(&one_off));
        }
        for slot in self.slots.values_mut() {
            slot.restart_at = None;
        }
        for slot in self.slots.values() {
            if let Some(run) = &slot.run {
                let _ = run.control.send(self.stop_control(&slot.spec.settings));
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

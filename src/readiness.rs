//! Readiness: whether this process is doing its job, as `GET /readyz`
//! reports it. Each long-running task (the delivery engine; later the
//! scheduler) reports its own state under its own name into one shared
//! handle; the web server reads it. Liveness (`/healthz`) stays separate: a
//! process waiting out a database outage is alive but not ready.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The state one component reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentState {
    /// Started, not yet through its first round of work.
    Starting,
    Running,
    /// Running, but retrying after errors (the reason says which).
    Degraded(String),
    /// Gave up; the process is about to exit.
    Failed(String),
    /// Stopped on request (shutdown).
    Stopped,
}

impl ComponentState {
    pub fn is_running(&self) -> bool {
        matches!(self, ComponentState::Running)
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentState::Starting => f.write_str("starting"),
            ComponentState::Running => f.write_str("running"),
            ComponentState::Degraded(why) => write!(f, "degraded: {why}"),
            ComponentState::Failed(why) => write!(f, "failed: {why}"),
            ComponentState::Stopped => f.write_str("stopped"),
        }
    }
}

/// A cheap, cloneable handle shared by the components and the web server.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeMap<&'static str, ComponentState>>>);

impl Readiness {
    pub fn report(&self, component: &'static str, state: ComponentState) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(component) != Some(&state) {
            map.insert(component, state);
        }
    }

    /// Every component that has reported, with its latest state.
    pub fn components(&self) -> Vec<(&'static str, ComponentState)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Why this process is not ready, component by component; empty when
    /// every component runs. A process with no component (a web server
    /// without delivery) is not ready either: it would deliver nothing.
    pub fn problems(&self) -> Vec<String> {
        let components = self.components();
        if components.is_empty() {
            return vec!["no delivery engine runs in this process".into()];
        }
        components
            .into_iter()
            .filter(|(_, s)| !s.is_running())
            .map(|(name, s)| format!("{name}: {s}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_runs() {
        let r = Readiness::default();
        assert_eq!(r.problems().len(), 1, "nothing registered is not ready");
        r.report("delivery", ComponentState::Running);
        assert!(r.problems().is_empty());
        r.report(
            "scheduler",
            ComponentState::Degraded("database down".into()),
        );
        assert_eq!(
            r.problems(),
            vec!["scheduler: degraded: database down".to_owned()]
        );
        r.report("scheduler", ComponentState::Running);
        assert!(r.problems().is_empty());
    }
}

//! How crew asks the API server: as the one field manager, `crew`, and
//! with the cluster's refusals turned into [`EngineError`]s that say what
//! crew was doing. Every part of the placement that writes uses these.

use crew_engine::EngineError;
use kube::api::{PatchParams, PostParams};

use crate::FIELD_MANAGER;

pub(crate) fn manager() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

pub(crate) fn manager_post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// A delete of something already gone is done.
pub(crate) fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The cluster's refusal in its own words, with what crew was doing.
pub(crate) fn kube_error(what: &str, error: kube::Error) -> EngineError {
    match error {
        kube::Error::Api(status) => EngineError::Engine(format!(
            "kubernetes: {what}: {} ({} {})",
            status.message, status.code, status.reason
        )),
        other => EngineError::Engine(format!("kubernetes: {what}: {other}")),
    }
}

pub(crate) fn cluster_error(error: crew_cluster::ClusterError) -> EngineError {
    EngineError::Engine(error.to_string())
}

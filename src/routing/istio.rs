//! The `istio` router (to be written).

use futures::future::BoxFuture;

use crate::cluster::ClusterError;
use crate::engine::Routes;
use crate::spec::Canary;
use crate::workload::Workloads;

use super::TrafficRouter;

pub struct Istio;

impl Istio {
    pub fn new(_canary: &Canary, _workloads: &Workloads) -> Result<Istio, ClusterError> {
        Err(ClusterError::Invalid(
            "the istio router is not written yet".into(),
        ))
    }
}

impl TrafficRouter for Istio {
    fn name(&self) -> &'static str {
        "istio"
    }

    fn set_routes<'a>(&'a self, _routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { Ok(()) })
    }
}

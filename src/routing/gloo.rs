//! The `gloo` router (to be written).

use futures::future::BoxFuture;

use crate::cluster::ClusterError;
use crate::engine::Routes;
use crate::spec::Canary;
use crate::workload::Workloads;

use super::TrafficRouter;

pub struct Gloo;

impl Gloo {
    pub fn new(_canary: &Canary, _workloads: &Workloads) -> Result<Gloo, ClusterError> {
        Err(ClusterError::Invalid(
            "the gloo router is not written yet".into(),
        ))
    }
}

impl TrafficRouter for Gloo {
    fn name(&self) -> &'static str {
        "gloo"
    }

    fn set_routes<'a>(&'a self, _routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { Ok(()) })
    }
}

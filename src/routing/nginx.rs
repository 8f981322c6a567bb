//! The `nginx` router (to be written).

use futures::future::BoxFuture;

use crate::cluster::ClusterError;
use crate::engine::Routes;
use crate::spec::Canary;
use crate::workload::Workloads;

use super::TrafficRouter;

pub struct Nginx;

impl Nginx {
    pub fn new(_canary: &Canary, _workloads: &Workloads) -> Result<Nginx, ClusterError> {
        Err(ClusterError::Invalid(
            "the nginx router is not written yet".into(),
        ))
    }
}

impl TrafficRouter for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn set_routes<'a>(&'a self, _routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move { Ok(()) })
    }
}

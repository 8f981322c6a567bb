//! The `kubernetes` provider: no traffic shifting. The apex Service selects the primary throughout;
//! the canary is tested through `<svc>-canary`, and promotion rolls the primary to the new
//! template, which is when the apex's traffic switches (blue/green, as Flagger does it).

use futures::future::BoxFuture;

use crate::cluster::ClusterError;
use crate::engine::Routes;

use super::TrafficRouter;

/// Blue/green: nothing to route; the Services created at bootstrap already point the apex at the
/// primary, and the engine never asks this provider for a canary weight.
pub struct BlueGreen;

impl TrafficRouter for BlueGreen {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn set_routes<'a>(&'a self, routes: &'a Routes) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            if routes.canary > 0 {
                tracing::debug!(
                    "kubernetes provider: ignoring a {}% canary weight; the apex stays on the primary",
                    routes.canary
                );
            }
            Ok(())
        })
    }
}

//! Fault tests: the runner against the cluster: promotion pinning, signals, leases, aborts, API outages.

#[allow(unused_imports)]
use crate::common::*;

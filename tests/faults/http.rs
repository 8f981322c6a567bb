//! Fault tests: outbound calls (webhooks, metrics, GitHub, GCS): hangs, huge bodies, credentials in URLs.

#[allow(unused_imports)]
use crate::common::*;

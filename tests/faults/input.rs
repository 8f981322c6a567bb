//! Fault tests: bad input (specs, timelines, flags, files) that must be refused with exit 2 and never hang or grow.

#[allow(unused_imports)]
use crate::common::*;

//! An embedded Prometheus for aviary's sandbox (to be written).

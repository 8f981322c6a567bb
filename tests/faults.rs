//! The fault-injection suite (issue 12): one test per fault a red-team run found, each named
//! after the fault (`fNN_...`, NN the item of the README's "Failure modes" table), each one
//! failing on the code before its fix. Real components wherever they can run: the `aviary`
//! binary as a subprocess, real signals, two real concurrent rollouts, hostile HTTP servers on
//! loopback, and the API emulator with injected faults standing in for the API server.

mod http;
mod input;
mod runner;
mod status;

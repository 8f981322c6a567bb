//! `aviary plan`: the schedule a Canary implies (see `aviary_core::plan`).

use std::io::Write;

use aviary_core::exit::Exit;
use aviary_core::plan;
use aviary_core::request::CanaryFile;

use super::AppError;

pub fn run(req: &CanaryFile, json: bool, out: &mut dyn Write) -> Result<Exit, AppError> {
    let (_canary, config) = super::load_config(req)?;
    let plan = plan::compute(&config)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &plan).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        plan::write_human(&plan, out)?;
    }
    Ok(Exit::Success)
}

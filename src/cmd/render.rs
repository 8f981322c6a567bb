//! `aviary render`: a target's manifests, images substituted, Canary documents apart.

use std::io::Write;

use aviary_core::exit::Exit;
use aviary_core::request;
use aviary_kube::render;

use super::AppError;

pub fn run(req: &request::Render, out: &mut dyn Write) -> Result<Exit, AppError> {
    let opts = render::options(&req.target, &req.source)?;
    let rendered = render::render(&opts)?;
    for w in &rendered.warnings {
        tracing::warn!("{w}");
    }
    render::write_output(&rendered, &req.output, out)?;
    Ok(Exit::Success)
}

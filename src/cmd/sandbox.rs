//! `aviary sandbox` and the demo app it starts (only with the `sandbox` feature).

use aviary_core::exit::Exit;
use aviary_sandbox::SandboxError;

use super::AppError;

pub fn run(args: &aviary_sandbox::SandboxArgs) -> Result<Exit, AppError> {
    aviary_sandbox::run(args).map_err(AppError::from)
}

pub fn demo_app(args: &aviary_sandbox::app::DemoAppArgs) -> Result<Exit, AppError> {
    Ok(aviary_sandbox::app::run(args)?)
}

impl From<SandboxError> for AppError {
    fn from(e: SandboxError) -> AppError {
        match e {
            SandboxError::Usage { message, help } => AppError::input(message).with_help(help),
            SandboxError::Setup(m) => AppError::input(m),
            // `aviary sandbox | head`: the reader went away (main exits 0 for it).
            SandboxError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                AppError::Output(e)
            }
            other => AppError::Runtime(other.to_string()),
        }
    }
}

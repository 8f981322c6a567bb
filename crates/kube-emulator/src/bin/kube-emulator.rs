//! `kube-emulator --kubeconfig PATH [--namespace NS] [--ready-delay-ms N]`: runs the
//! emulator until killed, after writing a kubeconfig for it and printing its URL.

use std::path::PathBuf;
use std::time::Duration;

use kube_emulator::{Config, Emulator};

fn usage() -> ! {
    eprintln!("usage: kube-emulator --kubeconfig PATH [--namespace NS] [--ready-delay-ms N]");
    std::process::exit(2)
}

fn main() {
    let mut kubeconfig: Option<PathBuf> = None;
    let mut namespace = "default".to_string();
    let mut delay_ms: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| usage())
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value())),
            "--namespace" | "-n" => namespace = value(),
            "--ready-delay-ms" => match value().parse() {
                Ok(n) => delay_ms = Some(n),
                Err(_) => usage(),
            },
            "--help" | "-h" => usage(),
            _ => usage(),
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        usage()
    };
    let mut config = Config::default();
    if let Some(ms) = delay_ms {
        config.deployment_ready_delay = Duration::from_millis(ms);
    }
    if !config.namespaces.contains(&namespace) {
        config.namespaces.push(namespace.clone());
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-emulator: {e}");
            std::process::exit(1)
        }
    };
    runtime.block_on(async move {
        let emu = match Emulator::start(config).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("kube-emulator: {e}");
                std::process::exit(1)
            }
        };
        if let Err(e) = emu.write_kubeconfig(&kubeconfig, &namespace) {
            eprintln!("kube-emulator: writing {}: {e}", kubeconfig.display());
            std::process::exit(1)
        }
        println!("{}", emu.url());
        let _ = tokio::signal::ctrl_c().await;
        drop(emu);
    });
}

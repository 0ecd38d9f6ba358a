//! `weir-cni`: Weir as a CNI plugin. A container runtime runs it with the request in
//! `CNI_*` environment variables and the network configuration on stdin; it answers on stdout
//! (a result, or a spec-shaped error with a non-zero exit). See the `weir_cni` library and docs/cni.md.

use std::{
    io::{Read, Write},
    process::ExitCode,
};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return answer(Err(weir_cni::error::CniError::new(
            weir_cni::error::code::IO_FAILURE,
            "error reading from stdin",
            e.to_string(),
        )
        .with_version(weir_cni::version::LATEST)));
    }
    answer(weir_cni::run(|k| std::env::var(k).ok(), &stdin))
}

fn answer(r: weir_cni::error::CniResult<Option<serde_json::Value>>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match r {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(v)) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&e).unwrap_or_default()
            );
            // Runtimes show stdout's error; stderr is for whoever reads the runtime's logs.
            eprintln!("weir-cni: {e}");
            ExitCode::FAILURE
        }
    }
}

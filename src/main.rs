use std::process::ExitCode;

use clap::Parser;

use tenantctl::cli::{Cli, Format};
use tenantctl::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.format == Format::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(tenantctl::commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("error: {e:#}");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": format!("{e:#}"), "exit_code": code })
                );
            }
            ExitCode::from(code)
        }
    }
}

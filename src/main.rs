use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use tenantctl::cli::{Cli, Format};
use tenantctl::exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
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

/// clap's usage errors exit 2; with --format json the error is also the one JSON document
/// on stdout, as for every other failure. Help and version print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--format" && w[1] == "json")
        || args.iter().any(|a| a == "--format=json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    let rendered = e.render().to_string();
    eprint!("{rendered}");
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    println!(
        "{}",
        serde_json::json!({ "error": first, "exit_code": exit::BAD_INPUT })
    );
    ExitCode::from(exit::BAD_INPUT)
}

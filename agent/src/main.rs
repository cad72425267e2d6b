use clap::Parser;
use shrike::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    shrike::telemetry::init(&cli.log);
    let code = match cli.command {
        Command::Check(args) => shrike::check::run(&args),
        Command::Events(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    std::process::exit(1);
                }
            };
            match rt.block_on(shrike::run_events(args)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    if e.downcast_ref::<shrike::probes::ProbeError>().is_some() {
                        shrike::EXIT_CANNOT_RUN
                    } else {
                        1
                    }
                }
            }
        }
    };
    std::process::exit(code);
}

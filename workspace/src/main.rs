use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = shrike_workspace::cli::Cli::parse();
    shrike_workspace::init_tracing();
    shrike_workspace::run(cli)
}

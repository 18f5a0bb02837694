//! The `bn-exp` binary: parse the command line, run, print the error chain once.

use std::process::ExitCode;

fn main() -> ExitCode {
    match bn_exp::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    match infragraph::cli::run() {
        Ok(code) => code,
        Err(err) => {
            // `infragraph impact ... | head` closing the pipe is not an error.
            let broken_pipe = err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    match infragraph::cli::run() {
        Ok(code) => code,
        Err(err) => {
            // `infragraph impact ... | head` closing the pipe is not an error.
            let broken_pipe = err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                    || e.downcast_ref::<serde_json::Error>()
                        .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            // The chain, each cause once: a driver's error often repeats
            // its source's text in its own ("error returned from database:
            // X", then X).
            let mut said = String::new();
            for cause in err.chain().map(|e| e.to_string()) {
                if said.ends_with(&cause) {
                    continue;
                }
                if !said.is_empty() {
                    said.push_str(": ");
                }
                said.push_str(&cause);
            }
            eprintln!("error: {said}");
            ExitCode::FAILURE
        }
    }
}

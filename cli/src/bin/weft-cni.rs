//! The `weft-cni` CNI plugin: the container runtime runs it with `CNI_*`
//! environment variables and the network configuration on stdin; it prints
//! a result or an error as JSON on stdout. The logic is in `weft_cni`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => weft_cni::run(&|name| std::env::var(name).ok(), &stdin),
        Err(e) => weft_cni::run_error(weft_cni::error::CniError::new(
            weft_cni::error::DECODING_FAILURE,
            format!("cannot read the network configuration from stdin: {e}"),
        )),
    };
    let mut out = std::io::stdout().lock();
    // Nothing else can report a failure to write the result.
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}

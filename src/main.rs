//! The `dmstrack` binary: everything lives in the library; see `dmstrack::cli`.

fn main() -> std::process::ExitCode {
    dmstrack::cli::main()
}

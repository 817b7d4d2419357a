fn main() -> std::process::ExitCode {
    airlock::serve::cli::main()
}

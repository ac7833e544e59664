fn main() -> std::process::ExitCode {
    berth_manager::cli::main()
}

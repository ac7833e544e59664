fn main() {
    std::process::exit(berth_runtime::cli::main())
}

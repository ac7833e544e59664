fn main() -> anyhow::Result<()> {
    berth_manager::cli::main()
}

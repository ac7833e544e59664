fn main() -> anyhow::Result<()> {
    berth_shim::cli::main()
}

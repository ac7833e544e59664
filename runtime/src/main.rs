fn main() -> anyhow::Result<()> {
    berth_runtime::cli::main()
}

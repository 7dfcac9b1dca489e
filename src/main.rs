fn main() -> std::process::ExitCode {
    voxgate::cli::run()
}

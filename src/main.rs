fn main() {
    std::process::exit(strnas::cli::main());
}

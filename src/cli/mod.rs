//! Command-line interface. `main.rs` only calls [`main`]; each command lives in its own module and returns an
//! exit code (0 ok, 1 check failed, 2 error).
//!
//! The top layer: parses arguments, calls the library, prints tables and JSON, and draws progress
//! (`progress::Bars` implements [`crate::progress::Progress`]). It may depend on every other module; no
//! other module depends on it.

mod bench_cmd;
mod dataset;
mod doctor;
mod eval_cmd;
mod export_cmd;
mod latency_cmd;
mod latency_additivity_cmd;
mod profile_view;
mod progress;
#[cfg(feature = "torch")]
mod rank_cmd;
mod sample_cmd;
#[cfg(feature = "torch")]
mod train_cmd;
mod report_cmd;
#[cfg(feature = "torch")]
mod search_cmd;
mod spec_cmd;
mod sweep_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::exit;

#[derive(Parser, Debug)]
#[command(
    name = "strnas",
    version,
    about = "STR-NAS: search, train, export and benchmark memory-efficient scene text recognisers",
    long_about = "STR-NAS: search, train, export and benchmark memory-efficient scene text recognisers.\n\n\
        A model is described by a YAML architecture spec (see arch_specs/): TPS rectifier + inverted-residual \
        feature extractor + BiLSTM + attention or CTC head. Start with `strnas spec show arch_specs/paper/\
        limited-3x3-ex3.yaml`.\n\nExit codes: 0 ok, 1 a check failed (invalid spec, regression), 2 error."
)]
pub struct Cli {
    /// Path to libonnxruntime.so (else ORT_DYLIB_PATH, else the strnas cache filled by `make deps`)
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate, inspect and generate architecture specs
    #[command(subcommand)]
    Spec(spec_cmd::SpecCommand),
    /// Build and inspect LMDB datasets: from image folders, or rendered synthetic words
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// ProxylessNAS over a space (a spec's skeleton), latency-aware through a table; writes the searched spec
    #[cfg(feature = "torch")]
    Search(search_cmd::SearchArgs),
    /// Random architectures of a space within a band of predicted latency, written as specs (the baseline a
    /// search must beat)
    Sample(sample_cmd::SampleArgs),
    /// Inherited accuracy of specs from a trained supernet (BatchNorm recalibrated), and its rank correlation
    /// with stand-alone accuracy
    #[cfg(feature = "torch")]
    Rank(rank_cmd::RankArgs),
    /// Train the network of a spec on LMDB data (libtorch), resumable
    #[cfg(feature = "torch")]
    Train(train_cmd::TrainArgs),
    /// Score trained weights (a spec, libtorch) or an exported model (.onnx, onnxruntime or tract) on datasets
    /// with the STR benchmark protocol
    Eval(eval_cmd::EvalArgs),
    /// Write the ONNX model of a spec and its weights (onnxruntime and tract run it)
    Export(export_cmd::ExportArgs),
    /// Check an exported model against tch (when built with it), onnxruntime and tract
    Verify(export_cmd::VerifyArgs),
    /// Recognise text in images with an exported model
    Infer(export_cmd::InferArgs),
    /// Time per image and size under onnxruntime, tract and tch; latency regression gate
    Bench(bench_cmd::BenchArgs),
    /// Latency lookup tables measured on a deployment runtime: build, predict, check against measurements
    #[command(subcommand)]
    Latency(latency_cmd::LatencyCommand),
    /// Draw the paper's charts (accuracy vs params and vs time, latency per runtime) from bench and eval JSON
    Report(report_cmd::ReportArgs),
    /// Many jobs (a Table 1, the search-quality protocol) from a plan: here, on Slurm or on Kubernetes; resumable
    #[command(subcommand)]
    Sweep(sweep_cmd::SweepCommand),
    /// Report the libtorch, onnxruntime and tract this build uses, whether CUDA is usable, and the GEMM peak
    Doctor(doctor::DoctorArgs),
}

/// Parses arguments, runs the command, returns the process exit code.
pub fn main() -> i32 {
    crate::runtime::tune_allocator();
    crate::runtime::default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::ERROR } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Spec(c) => spec_cmd::run(c),
        Command::Dataset(c) => dataset::run(c),
        #[cfg(feature = "torch")]
        Command::Search(a) => search_cmd::run(a),
        Command::Sample(a) => sample_cmd::run(a),
        #[cfg(feature = "torch")]
        Command::Rank(a) => rank_cmd::run(a),
        #[cfg(feature = "torch")]
        Command::Train(a) => train_cmd::run_train(a),
        Command::Eval(a) => eval_cmd::run_eval(a, cli.ort_lib.as_deref()),
        Command::Export(a) => export_cmd::run_export(a, cli.ort_lib.as_deref()),
        Command::Verify(a) => export_cmd::run_verify(a, cli.ort_lib.as_deref()),
        Command::Infer(a) => export_cmd::run_infer(a, cli.ort_lib.as_deref()),
        Command::Bench(a) => bench_cmd::run(a, cli.ort_lib.as_deref()),
        Command::Latency(c) => latency_cmd::run(c, cli.ort_lib.as_deref()),
        Command::Report(a) => report_cmd::run(a),
        Command::Sweep(c) => sweep_cmd::run(c),
        Command::Doctor(a) => doctor::run(a, cli.ort_lib.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::ERROR
        }
    }
}

pub use crate::io::write_atomic;

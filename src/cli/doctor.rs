//! `strnas doctor`: what this build links and finds at run time, and the machine's GEMM peak on one and on
//! all threads (the reference of `strnas bench`'s share-of-peak column).

use std::path::Path;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::{exit, runtime};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[cfg(feature = "torch")]
fn torch_report() -> serde_json::Value {
    let probe = std::panic::catch_unwind(|| tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).sum(tch::Kind::Float).double_value(&[]));
    json!({
        "built_with_torch": true,
        "libtorch_lib": env!("STRNAS_LIBTORCH_LIB"),
        "works": probe.ok() == Some(6.0),
        "cuda_available": crate::nn::cuda_available(),
        "cuda_backend": match crate::nn::cuda_backend() { Ok(()) => "loaded".to_string(), Err(e) => e },
        "cuda_devices": tch::Cuda::device_count(),
        "cudnn_available": tch::Cuda::cudnn_is_available(),
    })
}

#[cfg(not(feature = "torch"))]
fn torch_report() -> serde_json::Value {
    json!({"built_with_torch": false, "note": "built without the `torch` feature: search/train/eval unavailable"})
}

pub fn run(a: DoctorArgs, ort_lib: Option<&Path>) -> Result<i32> {
    let torch = torch_report();
    let ort = match runtime::init_ort(ort_lib) {
        Ok(lib) => json!({
            "found": true,
            "path": lib.path.display().to_string(),
            "source": lib.source,
            "version": runtime::ort_version(lib),
            "cuda_provider": runtime::ort_has_cuda().ok(),
        }),
        Err(e) => json!({"found": false, "error": format!("{e:#}")}),
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let peaks: Vec<serde_json::Value> = if ort["found"] == true {
        let mut counts = vec![1, threads];
        counts.dedup();
        counts
            .into_iter()
            .map(|t| match crate::bench::peak::measure(runtime::Device::Cpu, t, ort_lib) {
                Ok(p) => serde_json::to_value(p).unwrap_or_default(),
                Err(e) => json!({"threads": t, "error": format!("{e:#}")}),
            })
            .collect()
    } else {
        vec![]
    };
    let report = json!({
        "strnas": env!("CARGO_PKG_VERSION"),
        "cache": runtime::cache_dir().display().to_string(),
        "threads": threads,
        "torch": torch,
        "onnxruntime": ort,
        "tract": {"version": runtime::TRACT_VERSION},
        "gemm_peak": peaks,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("strnas      {} (cache {}, {} threads)", report["strnas"].as_str().unwrap_or("?"), report["cache"].as_str().unwrap_or("?"), report["threads"]);
        let t = &report["torch"];
        if t["built_with_torch"] == true {
            println!(
                "libtorch    {} ({}), CUDA {}, {} device(s) (CUDA backend: {})",
                t["libtorch_lib"].as_str().unwrap_or("?"),
                if t["works"] == true { "works" } else { "FAILED a tensor op" },
                if t["cuda_available"] == true { "available" } else { "not available" },
                t["cuda_devices"],
                t["cuda_backend"].as_str().unwrap_or("?")
            );
        } else {
            println!("libtorch    not built in (--no-default-features)");
        }
        let o = &report["onnxruntime"];
        if o["found"] == true {
            println!(
                "onnxruntime {} from {} ({}), CUDA provider {}",
                o["version"].as_str().unwrap_or("?"),
                o["path"].as_str().unwrap_or("?"),
                o["source"].as_str().unwrap_or("?"),
                if o["cuda_provider"] == true { "built in" } else { "absent" }
            );
        } else {
            println!("onnxruntime NOT FOUND: {}", o["error"].as_str().unwrap_or("?"));
        }
        println!("tract       {} (compiled in)", runtime::TRACT_VERSION);
        for p in &peaks {
            match p.get("median_gflops").and_then(|g| g.as_f64()) {
                Some(g) => println!(
                    "GEMM peak   {g:.1} GFLOP/s median, {:.1} best ({}, {n}x{n}x{n} float32, {} thread(s)): the reference of bench's % peak",
                    p["best_gflops"].as_f64().unwrap_or(0.0),
                    p["workload"].as_str().unwrap_or("?"),
                    p["threads"],
                    n = p["n"]
                ),
                None => println!("GEMM peak   not measured on {} thread(s): {}", p["threads"], p["error"].as_str().unwrap_or("?")),
            }
        }
    }
    let ok = report["onnxruntime"]["found"] == true && report["torch"]["works"] != false;
    Ok(if ok { exit::OK } else { exit::CHECK_FAILED })
}

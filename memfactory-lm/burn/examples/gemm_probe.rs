//! burn flex (`gemm` crate) f32 matmul throughput on the training step's shapes, plain and with
//! the right operand a transposed view; the peers' side is `benches/scripts/gemm_probe.py`.
//! `cargo run --release -p memfactory-lm-burn --example gemm_probe` on an idle machine.
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    memfactory_lm_burn::tune_allocator();
    let d = Device::flex();
    let m = 1152;
    let shapes = [
        ("q/o", m, 576, 576),
        ("k/v", m, 576, 192),
        ("gate/up", m, 576, 1536),
        ("down", m, 1536, 576),
        ("qkv packed", m, 576, 960),
        ("gu packed", m, 576, 3072),
    ];
    for (name, m, k, n) in shapes {
        let a = Tensor::<2>::random([m, k], Distribution::Default, &d);
        let b = Tensor::<2>::random([k, n], Distribution::Default, &d);
        let bt = Tensor::<2>::random([n, k], Distribution::Default, &d);
        for (label, tr) in [("", false), (" Bᵀ", true)] {
            let run = || {
                if tr {
                    a.clone().matmul(bt.clone().transpose())
                } else {
                    a.clone().matmul(b.clone())
                }
            };
            for _ in 0..3 {
                drop(run()); // flex runs eagerly: the product is done on return
            }
            let reps = 20;
            let t = Instant::now();
            for _ in 0..reps {
                drop(run()); // flex runs eagerly: the product is done on return
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{name:12}{label:3} {m}x{k}x{n}: {:.2} ms {:.1} GFLOP/s",
                dt * 1e3,
                2.0 * (m * k * n) as f64 / dt / 1e9
            );
        }
    }
}

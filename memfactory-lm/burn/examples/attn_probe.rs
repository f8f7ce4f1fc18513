//! Fused causal attention (forward + backward) on the training step's shapes (SmolLM2: 9 query
//! heads, 3 KV heads, head dim 64; 4 × 288 and 2 × 992 tokens), median of 10 after 2 warm-ups:
//! `cargo run --release -p memfactory-lm-burn --example attn_probe` on an idle machine.
use burn::tensor::{Device, Distribution, Tensor};
use memfactory_lm_burn::fused::{AttnDims, causal_attention};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    memfactory_lm_burn::tune_allocator();
    let d = Device::flex().autodiff();
    for (b, s) in [(4usize, 288usize), (2, 992)] {
        let n = b * s;
        let dims = AttnDims {
            batch: b,
            heads: 9,
            kv_heads: 3,
            theta: 10000.0,
        };
        let q = Tensor::<2>::random([n, 576], Distribution::Default, &d).require_grad();
        let k = Tensor::<2>::random([n, 192], Distribution::Default, &d).require_grad();
        let v = Tensor::<2>::random([n, 192], Distribution::Default, &d).require_grad();
        let run = || {
            let t0 = Instant::now();
            let o = causal_attention(q.clone(), k.clone(), v.clone(), dims);
            let l = o.sum();
            let _ = l.clone().into_scalar::<f32>();
            let t1 = Instant::now();
            let _g = l.backward();
            (t1 - t0, t1.elapsed())
        };
        for _ in 0..2 {
            run();
        }
        let (mut f, mut bw) = (vec![], vec![]);
        for _ in 0..10 {
            let (a, c) = run();
            f.push(a.as_secs_f64() * 1e3);
            bw.push(c.as_secs_f64() * 1e3);
        }
        f.sort_by(|a, b| a.partial_cmp(b).unwrap());
        bw.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "b={b} s={s}: fwd {:.2} ms (min {:.2}), bwd {:.2} ms (min {:.2})",
            f[5], f[0], bw[5], bw[0]
        );
    }
}

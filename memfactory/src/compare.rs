//! Paired comparison of two eval runs on the same questions (e.g. a base model and a
//! trained checkpoint): `memfactory compare RUN_A RUN_B`.
//!
//! Both run directories' `scores.jsonl` are read and paired by sample id. For every metric
//! both runs scored, the report gives each run's mean over the paired samples, the mean
//! paired difference B − A with its 95 % confidence half-width (normal approximation over
//! the per-sample differences, which is much tighter than comparing two independent
//! intervals when the runs share questions), and for 0/1 metrics the exact two-sided
//! McNemar test (the binomial test on the discordant pairs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memfactory_core::{Error, Result};

/// One metric compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricComparison {
    /// Mean of run A over the paired samples.
    pub mean_a: f64,
    /// Mean of run B over the paired samples.
    pub mean_b: f64,
    /// Mean of B − A.
    pub diff: f64,
    /// 95 % confidence half-width of `diff`.
    pub diff_ci95: f64,
    /// For 0/1 metrics: samples right in A only, right in B only, and the exact two-sided
    /// McNemar p-value.
    pub mcnemar: Option<McNemar>,
}

/// The discordant pairs of a 0/1 metric and the exact test on them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct McNemar {
    /// Right (1) in A, wrong (0) in B.
    pub a_only: usize,
    /// Wrong in A, right in B.
    pub b_only: usize,
    /// Two-sided exact p-value: `min(1, 2·P[X ≤ min(a_only, b_only)])`, X ~ Bin(a_only + b_only, ½).
    pub p_value: f64,
}

/// A paired comparison of two runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    /// Run A's directory.
    pub a: PathBuf,
    /// Run B's directory.
    pub b: PathBuf,
    /// Samples scored by A, by B, and by both (the paired ones).
    pub n_a: usize,
    /// See `n_a`.
    pub n_b: usize,
    /// See `n_a`.
    pub n_paired: usize,
    /// Per metric (those both runs scored).
    pub metrics: BTreeMap<String, MetricComparison>,
}

/// One sample's scores, by metric.
type Row = BTreeMap<String, f64>;
type Scores = BTreeMap<String, Row>;

fn read_scores(dir: &Path) -> Result<Scores> {
    let path = dir.join("scores.jsonl");
    let bytes = std::fs::read(&path).map_err(|e| Error::data_read(&path, e))?;
    // The last line of an eval that was killed can be cut short (no newline): it is no
    // record. A last line without a newline that is whole JSON (written by hand) is one.
    let whole = crate::eval::whole_lines(&bytes);
    let tail = &bytes[whole.len()..];
    let bytes = match serde_json::from_slice::<serde_json::Value>(tail) {
        Ok(_) => &bytes[..],
        Err(_) => whole,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::data(&path, None, format!("not UTF-8 text: {e}")))?;
    let mut out = Scores::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || Some(format!("line {}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::data(&path, at(), format!("invalid JSON: {e}")))?;
        let id = v["id"]
            .as_str()
            .ok_or_else(|| Error::data(&path, at(), "expected a string `id`"))?;
        let scores = v["scores"]
            .as_object()
            .ok_or_else(|| Error::data(&path, at(), "expected an object `scores`"))?;
        let mut m = BTreeMap::new();
        for (k, s) in scores {
            let s = s
                .as_f64()
                .ok_or_else(|| Error::data(&path, at(), format!("score `{k}` is not a number")))?;
            m.insert(k.clone(), s);
        }
        if out.insert(id.to_string(), m).is_some() {
            return Err(Error::data(
                &path,
                at(),
                format!("sample `{id}` appears twice"),
            ));
        }
    }
    Ok(out)
}

/// Exact two-sided McNemar p-value for `b` and `c` discordant pairs.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // P[X ≤ k] for X ~ Bin(n, ½), summed in log space (n may exceed f64's 2^-1074 range).
    let k = b.min(c);
    let mut ln_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut cdf = 0.0;
    for i in 0..=k {
        cdf += ln_pmf.exp();
        ln_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    (2.0 * cdf).min(1.0)
}

/// Compares runs `a` and `b` (directories holding `scores.jsonl`), pairing samples by id.
pub fn compare_runs(a: &Path, b: &Path) -> Result<Comparison> {
    let (sa, sb) = (read_scores(a)?, read_scores(b)?);
    let paired: Vec<(&Row, &Row)> = sa
        .iter()
        .filter_map(|(id, x)| sb.get(id).map(|y| (x, y)))
        .collect();
    if paired.is_empty() {
        return Err(Error::data(
            b.join("scores.jsonl"),
            None,
            format!(
                "no sample id in common with {} (were both runs evaluated on the same data?)",
                a.join("scores.jsonl").display()
            ),
        ));
    }
    let names: Vec<&String> = paired[0]
        .0
        .keys()
        .filter(|k| {
            paired
                .iter()
                .all(|(x, y)| x.contains_key(*k) && y.contains_key(*k))
        })
        .collect();
    let mut metrics = BTreeMap::new();
    for name in names {
        let xs: Vec<f64> = paired.iter().map(|(x, _)| x[name]).collect();
        let ys: Vec<f64> = paired.iter().map(|(_, y)| y[name]).collect();
        let n = xs.len() as f64;
        let d: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| y - x).collect();
        let diff = d.iter().sum::<f64>() / n;
        let ci = if d.len() < 2 {
            0.0
        } else {
            let var = d.iter().map(|v| (v - diff).powi(2)).sum::<f64>() / (n - 1.0);
            1.96 * (var / n).sqrt()
        };
        let binary = xs.iter().chain(&ys).all(|&v| v == 0.0 || v == 1.0);
        let mcnemar = binary.then(|| {
            let a_only = xs.iter().zip(&ys).filter(|(x, y)| **x > **y).count();
            let b_only = xs.iter().zip(&ys).filter(|(x, y)| **x < **y).count();
            McNemar {
                a_only,
                b_only,
                p_value: mcnemar_p(a_only, b_only),
            }
        });
        metrics.insert(
            name.clone(),
            MetricComparison {
                mean_a: xs.iter().sum::<f64>() / n,
                mean_b: ys.iter().sum::<f64>() / n,
                diff,
                diff_ci95: ci,
                mcnemar,
            },
        );
    }
    Ok(Comparison {
        a: a.to_path_buf(),
        b: b.to_path_buf(),
        n_a: sa.len(),
        n_b: sb.len(),
        n_paired: paired.len(),
        metrics,
    })
}

impl Comparison {
    /// A Markdown table of the comparison.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "A = {} ({} samples), B = {} ({} samples), {} paired by id\n\n\
             | metric | A | B | B − A (95 % CI) | A only / B only right | McNemar p |\n\
             |---|---|---|---|---|---|\n",
            self.a.display(),
            self.n_a,
            self.b.display(),
            self.n_b,
            self.n_paired
        );
        for (k, m) in &self.metrics {
            let (disc, p) = match &m.mcnemar {
                Some(t) => (
                    format!("{} / {}", t.a_only, t.b_only),
                    format!("{:.3}", t.p_value),
                ),
                None => ("–".into(), "–".into()),
            };
            s.push_str(&format!(
                "| {k} | {:.3} | {:.3} | {:+.3} ± {:.3} | {disc} | {p} |\n",
                m.mean_a, m.mean_b, m.diff, m.diff_ci95
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, rows: &[(&str, f64, f64)]) {
        std::fs::create_dir_all(dir).unwrap();
        let text: String = rows
            .iter()
            .map(|(id, em, f1)| {
                format!("{{\"id\":\"{id}\",\"scores\":{{\"em\":{em},\"f1\":{f1}}}}}\n")
            })
            .collect();
        std::fs::write(dir.join("scores.jsonl"), text).unwrap();
    }

    #[test]
    fn mcnemar_matches_the_binomial_test() {
        // 0 vs 5 discordant: 2 · (½)^5.
        assert!((mcnemar_p(0, 5) - 0.0625).abs() < 1e-12);
        // 2 vs 8: 2 · (1 + 10 + 45) / 1024.
        assert!((mcnemar_p(8, 2) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_p(3, 3), 1.0);
        assert_eq!(mcnemar_p(0, 0), 1.0);
        // Large n stays finite and tiny.
        let p = mcnemar_p(0, 3000);
        assert!(p.is_finite() && p < 1e-300);
    }

    #[test]
    fn pairs_by_id_and_reports_paired_differences() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        run(
            &a,
            &[
                ("q1", 1.0, 0.5),
                ("q2", 0.0, 0.0),
                ("q3", 0.0, 0.2),
                ("qa", 1.0, 1.0),
            ],
        );
        run(
            &b,
            &[
                ("q3", 1.0, 0.4),
                ("q2", 1.0, 0.0),
                ("q1", 1.0, 0.5),
                ("qb", 0.0, 0.0),
            ],
        );
        let c = compare_runs(&a, &b).unwrap();
        assert_eq!((c.n_a, c.n_b, c.n_paired), (4, 4, 3));
        let em = &c.metrics["em"];
        assert!((em.mean_a - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(em.mean_b, 1.0);
        assert!((em.diff - 2.0 / 3.0).abs() < 1e-12);
        // Differences 0, 1, 1: sd = 1/√3, half-width 1.96 · sd / √3.
        assert!((em.diff_ci95 - 1.96 / 3.0).abs() < 1e-12);
        let t = em.mcnemar.as_ref().unwrap();
        assert_eq!((t.a_only, t.b_only), (0, 2));
        assert!((t.p_value - 0.5).abs() < 1e-12);
        // f1 is not 0/1: no McNemar.
        assert!(c.metrics["f1"].mcnemar.is_none());
        assert!(c.markdown().contains("| em | 0.333 | 1.000 | +0.667"));
    }

    #[test]
    fn bad_inputs_name_the_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        run(&a, &[("q1", 1.0, 0.5)]);
        let e = compare_runs(&a, &b).unwrap_err().to_string();
        assert!(e.contains("scores.jsonl") && e.contains("not found"), "{e}");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("scores.jsonl"),
            "{\"id\":\"q1\",\"scores\":{}}\n{oops\n",
        )
        .unwrap();
        let e = compare_runs(&a, &b).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("invalid JSON"), "{e}");
        run(&b, &[("other", 1.0, 0.5)]);
        let e = compare_runs(&a, &b).unwrap_err().to_string();
        assert!(e.contains("no sample id in common"), "{e}");
    }

    #[test]
    fn a_last_line_a_kill_cut_short_is_ignored() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        run(&a, &[("q1", 1.0, 0.5), ("q2", 0.0, 0.0)]);
        run(&b, &[("q1", 0.0, 0.5)]);
        let mut cut = std::fs::read(b.join("scores.jsonl")).unwrap();
        // The next line, cut inside a multi-byte character.
        cut.extend_from_slice("{\"id\":\"q2\",\"answer\":\"é".as_bytes());
        cut.pop();
        std::fs::write(b.join("scores.jsonl"), &cut).unwrap();
        let c = compare_runs(&a, &b).unwrap();
        assert_eq!((c.n_a, c.n_b, c.n_paired), (2, 1, 1));
        // A whole last line without its newline still counts.
        std::fs::write(
            b.join("scores.jsonl"),
            "{\"id\":\"q1\",\"scores\":{}}\n{\"id\":\"q2\",\"scores\":{}}",
        )
        .unwrap();
        assert_eq!(compare_runs(&a, &b).unwrap().n_b, 2);
    }
}

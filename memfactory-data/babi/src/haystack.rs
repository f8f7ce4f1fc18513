//! bAbI-in-haystack: a story's facts scattered, in order, through background text sized to
//! a token budget.

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use memfactory_core::rng::bounded;

use crate::filler::BUILTIN_SENTENCES;

/// Where background lines come from.
#[derive(Debug, Clone, Copy)]
pub enum Background<'a> {
    /// [`BUILTIN_SENTENCES`], cycling from the first.
    Builtin,
    /// These utterances, consecutively from a random start, wrapping around.
    Utterances(&'a [String]),
}

/// One laid-out haystack.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The context: one background sentence or fact per line.
    pub context: String,
    /// 0-based line of each fact in `context`, in fact order.
    pub fact_lines: Vec<usize>,
    /// Number of background lines.
    pub background: usize,
    /// Index of the first background utterance (utterance filler only).
    pub filler_start: Option<usize>,
}

/// Lays out `facts` among `n` background lines with an RNG seeded by `seed`.
///
/// Draw order, from a [`ChaCha8Rng`] seeded with `seed_from_u64(seed)`: first (utterance
/// filler only) the start utterance, `bounded(len)`; then one gap per fact,
/// `bounded(n + 1)` each, sorted ascending (stable, so facts keep their order). Gap `g`
/// puts the fact before background line `g` (`g = n`: after the last). Facts sharing a gap
/// stay in story order.
pub fn layout(facts: &[String], n: usize, background: Background<'_>, seed: u64) -> Layout {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let filler_start = match background {
        Background::Builtin => None,
        Background::Utterances(u) => Some(bounded(&mut rng, u.len() as u64) as usize),
    };
    let mut gaps: Vec<usize> = (0..facts.len())
        .map(|_| bounded(&mut rng, n as u64 + 1) as usize)
        .collect();
    gaps.sort_unstable();
    let bg = |j: usize| -> &str {
        match background {
            Background::Builtin => BUILTIN_SENTENCES[j % BUILTIN_SENTENCES.len()],
            Background::Utterances(u) => u[(filler_start.unwrap_or(0) + j) % u.len()].as_str(),
        }
    };
    let mut lines: Vec<&str> = Vec::with_capacity(n + facts.len());
    let mut fact_lines = Vec::with_capacity(facts.len());
    let mut f = 0;
    for j in 0..=n {
        while f < facts.len() && gaps[f] == j {
            fact_lines.push(lines.len());
            lines.push(facts[f].as_str());
            f += 1;
        }
        if j < n {
            lines.push(bg(j));
        }
    }
    Layout {
        context: lines.join("\n"),
        fact_lines,
        background: n,
        filler_start,
    }
}

/// The largest `n` in `0..=max` with `measure(n) <= target`, assuming `measure` grows with
/// `n`, with its measure; `None` when even `measure(0)` exceeds `target`.
///
/// Starts from a linear estimate (the per-line cost measured at 16 lines), then alternates
/// secant steps and bisection inside the bracket, so it takes `O(log max)` measurements at
/// worst and usually a handful.
pub fn fit<E>(
    max: usize,
    target: usize,
    mut measure: impl FnMut(usize) -> Result<usize, E>,
) -> Result<Option<(usize, usize)>, E> {
    let c0 = measure(0)?;
    if c0 > target {
        return Ok(None);
    }
    let (mut lo, mut lo_c) = (0usize, c0);
    let mut hi: Option<(usize, usize)> = None; // smallest size known not to fit
    let mut probe = 16.min(max);
    let mut step = 0u32;
    while probe > lo && hi.is_none_or(|(h, _)| probe < h) {
        let c = measure(probe)?;
        if c <= target {
            lo = probe;
            lo_c = c;
        } else {
            hi = Some((probe, c));
        }
        step += 1;
        probe = match hi {
            None => {
                if lo >= max {
                    break;
                }
                // Extrapolate from (0, c0) and (lo, lo_c); at least double when flat.
                let per = (lo_c.saturating_sub(c0)) as f64 / lo.max(1) as f64;
                let guess = if per > 0.0 {
                    lo + ((target - lo_c) as f64 / per).floor() as usize + 1
                } else {
                    lo.saturating_mul(2)
                };
                guess.clamp(lo + 1, max)
            }
            Some((h, hc)) => {
                if h - lo <= 1 {
                    break;
                }
                let mid = lo + (h - lo) / 2;
                if step % 2 == 1 && hc > lo_c {
                    let t = (target - lo_c) as f64 / (hc - lo_c) as f64;
                    let g = lo + (t * (h - lo) as f64).floor() as usize;
                    // One past the secant estimate, to bracket from above when it is exact.
                    (g + 1).clamp(lo + 1, h - 1)
                } else {
                    mid
                }
            }
        };
    }
    Ok(Some((lo, lo_c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_finds_largest() {
        for target in [0usize, 2, 3, 10, 99, 1000, 123_456] {
            let r: Result<_, ()> = fit(1_000_000, target, |n| Ok(7 * n + 3));
            let want = (target >= 3).then(|| ((target - 3) / 7, 7 * ((target - 3) / 7) + 3));
            assert_eq!(r.unwrap(), want, "{target}");
        }
        // Capped.
        let r: Result<_, ()> = fit(10, 1000, Ok);
        assert_eq!(r.unwrap(), Some((10, 10)));
        // Flat measure terminates at the cap.
        let r: Result<_, ()> = fit(1000, 10, |_| Ok(1));
        assert_eq!(r.unwrap(), Some((1000, 1)));
        // Irregular growth.
        let r: Result<_, ()> = fit(100_000, 50_000, |n| Ok(5 * n + (n % 7) * 3 + 10));
        let (n, c) = r.unwrap().unwrap();
        assert!(c <= 50_000 && 5 * (n + 1) + 10 > 50_000 - 18, "{n} {c}");
    }

    #[test]
    fn fit_is_frugal() {
        let mut calls = 0;
        let r: Result<_, ()> = fit(1_000_000, 128_000, |n| {
            calls += 1;
            Ok(11 * n + 40 + n % 5)
        });
        assert!(r.unwrap().is_some());
        assert!(calls <= 25, "{calls} measurements");
    }

    #[test]
    fn layout_keeps_fact_order() {
        let facts: Vec<String> = (0..6).map(|i| format!("Fact {i}.")).collect();
        for seed in 0..20 {
            let l = layout(&facts, 30, Background::Builtin, seed);
            let lines: Vec<&str> = l.context.lines().collect();
            assert_eq!(lines.len(), 36);
            for (k, &i) in l.fact_lines.iter().enumerate() {
                assert_eq!(lines[i], facts[k]);
            }
            assert!(l.fact_lines.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[cfg(test)]
mod frozen {
    use super::*;

    #[test]
    fn layouts_are_frozen() {
        // A change here changes every haystack instance.
        let facts: Vec<String> = (0..3).map(|i| format!("F{i}.")).collect();
        let l = layout(&facts, 10, Background::Builtin, 42);
        assert_eq!(l.fact_lines, [4, 8, 12]);
        assert_eq!(l.context.lines().nth(4), Some("F0."));
        let u: Vec<String> = (0..7).map(|i| format!("U{i}.")).collect();
        let l = layout(&facts, 10, Background::Utterances(&u), 42);
        assert_eq!((l.fact_lines, l.filler_start), (vec![4, 7, 12], Some(4)));
        assert_eq!(l.context.lines().next(), Some("U4."));
    }
}

//! Cross-episode batching: many episodes run on worker threads, and their LM calls are
//! gathered into one batched `generate` on the wrapped model.
//!
//! A paradigm batches the paths of one sample itself (lockstep); [`BatchingLm`] batches
//! *across samples*, for any paradigm, without the paradigm knowing: each worker thread
//! registers with [`BatchingLm::worker`], and a call to `generate` queues its requests and
//! waits. When every live worker is waiting (or `max_batch` requests are queued), one waiting
//! thread becomes the leader and runs the queued requests as one batch on the inner model.
//! Requests carry their own seeds, so sampling does not depend on who shares the batch; the
//! queued requests are ordered by seed (then prompt) before a batch is cut, so when the same
//! requests meet in a batch they are laid out identically whatever order the threads
//! arrived in, and a run's log-probs are bit-for-bit reproducible.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use memfactory_core::{Error, GenRequest, Generation, LanguageModel, Prompt, Result};

struct State {
    live: usize,
    queue: Vec<(u64, usize, GenRequest)>,
    /// Calls with requests not yet generated: call id → requests still outstanding.
    pending: HashMap<u64, usize>,
    done: HashMap<(u64, usize), std::result::Result<Generation, String>>,
    running: bool,
    next_call: u64,
    batches: usize,
    batched_requests: usize,
}

/// A [`LanguageModel`] that merges concurrent `generate` calls into batches.
pub struct BatchingLm<'a> {
    inner: &'a dyn LanguageModel,
    max_batch: usize,
    state: Mutex<State>,
    cv: Condvar,
}

/// Keeps a worker registered while alive (see [`BatchingLm::worker`]).
pub struct WorkerGuard<'b, 'a> {
    lm: &'b BatchingLm<'a>,
}

impl Drop for WorkerGuard<'_, '_> {
    fn drop(&mut self) {
        let mut st = self.lm.lock();
        st.live -= 1;
        drop(st);
        self.lm.cv.notify_all();
    }
}

impl<'a> BatchingLm<'a> {
    /// Wraps `inner`; at most `max_batch` requests go into one batch (at least 1).
    pub fn new(inner: &'a dyn LanguageModel, max_batch: usize) -> Self {
        BatchingLm {
            inner,
            max_batch: max_batch.max(1),
            state: Mutex::new(State {
                live: 0,
                queue: Vec::new(),
                pending: HashMap::new(),
                done: HashMap::new(),
                running: false,
                next_call: 0,
                batches: 0,
                batched_requests: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another worker poisons the lock; the state stays consistent because
        // every update is completed before unlocking, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the calling thread as a worker until the guard drops. A batch is flushed
    /// when every registered worker is waiting in `generate`.
    pub fn worker(&self) -> WorkerGuard<'_, 'a> {
        self.lock().live += 1;
        WorkerGuard { lm: self }
    }

    /// (batches run, requests generated) so far.
    pub fn stats(&self) -> (usize, usize) {
        let st = self.lock();
        (st.batches, st.batched_requests)
    }
}

impl LanguageModel for BatchingLm<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids)
    }

    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.inner.prompt_ids(prompt)
    }

    fn context_length(&self) -> Option<usize> {
        self.inner.context_length()
    }

    fn generate(&self, requests: &[GenRequest]) -> Result<Vec<Generation>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let call = st.next_call;
        st.next_call += 1;
        for (i, r) in requests.iter().enumerate() {
            st.queue.push((call, i, r.clone()));
        }
        st.pending.insert(call, requests.len());
        loop {
            if !st.pending.contains_key(&call) {
                let mut out = Vec::with_capacity(requests.len());
                for i in 0..requests.len() {
                    match st.done.remove(&(call, i)) {
                        Some(Ok(g)) => out.push(g),
                        Some(Err(m)) => return Err(Error::backend("lm", m)),
                        None => return Err(Error::backend("lm", "lost a batched generation")),
                    }
                }
                return Ok(out);
            }
            let all_waiting = st.pending.len() >= st.live;
            if !st.running
                && !st.queue.is_empty()
                && (all_waiting || st.queue.len() >= self.max_batch)
            {
                // Arrival order depends on thread timing; a fixed order keeps the batch (and
                // so its padding and floating-point results) reproducible run to run.
                st.queue
                    .sort_by_cached_key(|(_, _, r)| (r.params.seed, format!("{:?}", r.prompt)));
                let n = st.queue.len().min(self.max_batch);
                let batch: Vec<(u64, usize, GenRequest)> = st.queue.drain(..n).collect();
                st.running = true;
                drop(st);
                let reqs: Vec<GenRequest> = batch.iter().map(|(_, _, r)| r.clone()).collect();
                let result = self.inner.generate(&reqs);
                st = self.lock();
                st.running = false;
                st.batches += 1;
                st.batched_requests += n;
                let outcomes: Vec<std::result::Result<Generation, String>> = match result {
                    Ok(gens) if gens.len() == n => gens.into_iter().map(Ok).collect(),
                    Ok(gens) => {
                        vec![Err(format!("asked for {n} generations, got {}", gens.len())); n]
                    }
                    Err(e) => vec![Err(e.to_string()); n],
                };
                for ((c, i, _), o) in batch.into_iter().zip(outcomes) {
                    st.done.insert((c, i), o);
                    let left = st.pending.get_mut(&c).map(|l| {
                        *l -= 1;
                        *l
                    });
                    if left == Some(0) {
                        st.pending.remove(&c);
                    }
                }
                self.cv.notify_all();
                continue;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn wait_outside(&self, wait: &mut dyn FnMut()) {
        // Not counted as live while it waits, so the other workers' calls are batched
        // without it; counted again before it can call `generate`.
        // A thread that never registered (live == 0) has nothing to leave.
        struct Rejoin<'b, 'a>(&'b BatchingLm<'a>, bool);
        impl Drop for Rejoin<'_, '_> {
            fn drop(&mut self) {
                if self.1 {
                    self.0.lock().live += 1;
                }
            }
        }
        let left = {
            let mut st = self.lock();
            let left = st.live > 0;
            if left {
                st.live -= 1;
            }
            left
        };
        self.cv.notify_all();
        let _rejoin = Rejoin(self, left);
        wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfactory_core::SamplingParams;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Echoes the prompt text and counts calls and their sizes.
    struct Echo {
        calls: AtomicUsize,
        max_seen: AtomicUsize,
    }

    impl LanguageModel for Echo {
        fn describe(&self) -> String {
            "echo".into()
        }
        fn encode(&self, t: &str) -> Result<Vec<u32>> {
            Ok(t.bytes().map(u32::from).collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(ids.iter().map(|&i| i as u8 as char).collect())
        }
        fn prompt_ids(&self, p: &Prompt) -> Result<Vec<u32>> {
            match p {
                Prompt::Text(t) => self.encode(t),
                _ => Ok(vec![]),
            }
        }
        fn generate(&self, reqs: &[GenRequest]) -> Result<Vec<Generation>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.max_seen.fetch_max(reqs.len(), Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            reqs.iter()
                .map(|r| {
                    let Prompt::Text(t) = &r.prompt else {
                        unreachable!()
                    };
                    if t == "fail" {
                        return Err(Error::backend("echo", "asked to fail"));
                    }
                    Ok(Generation {
                        prompt_ids: self.encode(t)?,
                        token_ids: vec![],
                        logprobs: vec![],
                        text: t.clone(),
                        finish: memfactory_core::Finish::Eos,
                    })
                })
                .collect()
        }
    }

    fn req(t: &str) -> GenRequest {
        GenRequest {
            prompt: Prompt::Text(t.into()),
            params: SamplingParams::greedy(4),
        }
    }

    #[test]
    fn concurrent_calls_are_merged_and_answers_routed_back() {
        let inner = Echo {
            calls: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
        };
        let lm = BatchingLm::new(&inner, 8);
        std::thread::scope(|s| {
            for w in 0..4 {
                let lm = &lm;
                s.spawn(move || {
                    let _g = lm.worker();
                    for step in 0..10 {
                        let a = format!("w{w}s{step}a");
                        let b = format!("w{w}s{step}b");
                        let out = lm.generate(&[req(&a), req(&b)]).unwrap();
                        assert_eq!(out[0].text, a);
                        assert_eq!(out[1].text, b);
                    }
                });
            }
        });
        let (batches, requests) = lm.stats();
        assert_eq!(requests, 80);
        assert!(batches < 40, "{batches} batches: nothing was merged");
        assert!(inner.max_seen.load(Ordering::SeqCst) <= 8);
    }

    #[test]
    fn errors_reach_every_caller_of_the_batch_and_single_use_passes_through() {
        let inner = Echo {
            calls: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
        };
        let lm = BatchingLm::new(&inner, 4);
        // No registered worker: plain pass-through.
        assert_eq!(lm.generate(&[req("x")]).unwrap()[0].text, "x");
        let err = lm.generate(&[req("ok"), req("fail")]).unwrap_err();
        assert!(err.to_string().contains("asked to fail"));
        // Larger than max_batch: split over several batches, order kept.
        let many: Vec<GenRequest> = (0..10).map(|i| req(&i.to_string())).collect();
        let out = lm.generate(&many).unwrap();
        assert_eq!(
            out.iter().map(|g| g.text.clone()).collect::<Vec<_>>(),
            (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_worker_waiting_outside_the_lm_does_not_stall_the_others() {
        // Worker A waits (outside the LM) for worker B, which needs two LM calls first.
        // Were A still counted as live, B's calls would wait for A forever.
        let inner = Echo {
            calls: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
        };
        let lm = BatchingLm::new(&inner, 8);
        let done = std::sync::OnceLock::<String>::new();
        std::thread::scope(|s| {
            let (lm, done) = (&lm, &done);
            let a = s.spawn(move || {
                let _g = lm.worker();
                lm.wait_outside(&mut || {
                    done.wait();
                });
                // Back in: its own call still goes through.
                lm.generate(&[req("a")]).unwrap()[0].text.clone()
            });
            let b = s.spawn(move || {
                let _g = lm.worker();
                let x = lm.generate(&[req("b1")]).unwrap()[0].text.clone();
                let y = lm.generate(&[req("b2")]).unwrap()[0].text.clone();
                done.set(format!("{x}{y}")).unwrap();
            });
            b.join().unwrap();
            assert_eq!(a.join().unwrap(), "a");
        });
        assert_eq!(done.get().map(String::as_str), Some("b1b2"));
        assert_eq!(lm.lock().live, 0);
    }
}

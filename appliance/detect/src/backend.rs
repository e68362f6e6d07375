//! Inference backends. Each takes one preprocessed input tensor and returns the model's outputs
//! as plain f32 tensors; decoding is shared.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use crate::DetectError;

/// One model output, copied out of the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Which runtime runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// ONNX Runtime, loaded at run time from the shared library at the given path.
    Ort,
    /// tract, pure Rust.
    Tract,
}

pub trait Backend: Send {
    /// Runs the model on an input of `shape`.
    fn run(&mut self, input: &[f32], shape: [usize; 4]) -> Result<Vec<OutputTensor>, DetectError>;
}

/// How a backend uses the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// Threads for one inference (ONNX Runtime's intra-op pool, tract's matrix-product pool).
    pub count: usize,
    /// Inferences that may run at once: the model is loaded this many times, and every camera
    /// shares those copies.
    pub sessions: usize,
    /// Whether the pool threads (ONNX Runtime's, or tract's) spin while they wait for work
    /// within a run: faster inference. They stop when the run ends, so the rest of the pipeline
    /// has the cores between frames.
    pub spin: bool,
}

impl Threads {
    pub fn new(count: usize) -> Self {
        Self {
            count,
            sessions: 1,
            spin: true,
        }
    }
}

/// Copies of one loaded model, shared by every camera that uses it: a run takes whichever copy
/// is idle, and waits while none is. With more cameras than cores, runs one after another beat
/// runs side by side that fight over the cores, and one copy costs one model's memory.
pub(crate) struct Pool {
    idle: Mutex<Vec<Box<dyn Backend>>>,
    freed: Condvar,
}

impl Pool {
    pub(crate) fn new(backends: Vec<Box<dyn Backend>>) -> Self {
        Self {
            idle: Mutex::new(backends),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn run(
        &self,
        input: &[f32],
        shape: [usize; 4],
    ) -> Result<Vec<OutputTensor>, DetectError> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let backend = loop {
            match idle.pop() {
                Some(b) => break b,
                None => idle = self.freed.wait(idle).unwrap_or_else(|e| e.into_inner()),
            }
        };
        drop(idle);
        // Given back even if the run panics, so the other cameras never wait for it forever.
        let mut lent = Lent {
            pool: self,
            backend: Some(backend),
        };
        lent.backend
            .as_mut()
            .expect("lent until dropped")
            .run(input, shape)
    }
}

struct Lent<'a> {
    pool: &'a Pool,
    backend: Option<Box<dyn Backend>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.backend.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(b);
            self.pool.freed.notify_one();
        }
    }
}

/// Builds a backend for `model` (ONNX bytes). `ort_library` is the ONNX Runtime shared library.
pub fn build(
    kind: BackendKind,
    model: &[u8],
    shape: [usize; 4],
    threads: Threads,
    ort_library: &Path,
) -> Result<Box<dyn Backend>, DetectError> {
    match kind {
        #[cfg(feature = "ort")]
        BackendKind::Ort => Ok(Box::new(ort_backend::OrtBackend::new(
            model,
            threads,
            ort_library,
        )?)),
        #[cfg(not(feature = "ort"))]
        BackendKind::Ort => {
            let _ = (model, threads, ort_library);
            Err(DetectError::BackendUnavailable("ort"))
        }
        #[cfg(feature = "tract")]
        BackendKind::Tract => Ok(Box::new(tract_backend::TractBackend::new(
            model, shape, threads,
        )?)),
        #[cfg(not(feature = "tract"))]
        BackendKind::Tract => {
            let _ = (shape, threads);
            Err(DetectError::BackendUnavailable("tract"))
        }
    }
}

#[cfg(feature = "ort")]
mod ort_backend {
    use std::path::Path;
    use std::sync::OnceLock;

    use ort::environment::Environment;
    use ort::session::Session;
    use ort::value::TensorRef;

    use super::{Backend, OutputTensor, Threads};
    use crate::DetectError;

    /// ONNX Runtime allows one environment per process; it lives for the whole process.
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

    fn rt(e: impl std::fmt::Display) -> DetectError {
        DetectError::Runtime(e.to_string())
    }

    pub(super) struct OrtBackend {
        session: Session,
        input_name: String,
    }

    impl OrtBackend {
        pub(super) fn new(
            model: &[u8],
            threads: Threads,
            library: &Path,
        ) -> Result<Self, DetectError> {
            let env = ENVIRONMENT
                .get_or_init(|| {
                    ort::init_from(library)
                        .map_err(|e| {
                            format!("cannot load ONNX Runtime from {}: {e}", library.display())
                        })?
                        .with_name("aegis")
                        .build()
                        .map_err(|e| e.to_string())
                })
                .as_ref()
                .map_err(|e| DetectError::Runtime(e.clone()))?;
            let session = Session::builder(env)
                .map_err(rt)?
                .with_intra_threads(threads.count)
                .map_err(rt)?
                .with_intra_op_spinning(threads.spin)
                .map_err(rt)?
                .with_config_entry("session.force_spinning_stop", "1")
                .map_err(rt)?
                .with_inter_threads(1)
                .map_err(rt)?
                .commit_from_memory(model)
                .map_err(|e| DetectError::Runtime(format!("cannot load the model: {e}")))?;
            let input_name = session
                .inputs()
                .first()
                .ok_or_else(|| DetectError::Runtime("the model has no inputs".into()))?
                .name()
                .to_owned();
            Ok(Self {
                session,
                input_name,
            })
        }
    }

    impl Backend for OrtBackend {
        fn run(
            &mut self,
            input: &[f32],
            shape: [usize; 4],
        ) -> Result<Vec<OutputTensor>, DetectError> {
            let tensor = TensorRef::from_array_view((shape, input)).map_err(rt)?;
            let outputs = self
                .session
                .run(ort::inputs![self.input_name.as_str() => tensor])
                .map_err(rt)?;
            outputs
                .iter()
                .map(|(_, value)| {
                    let (shape, data) = value.try_extract_tensor::<f32>().map_err(rt)?;
                    Ok(OutputTensor {
                        shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                        data: data.to_vec(),
                    })
                })
                .collect()
        }
    }
}

#[cfg(feature = "tract")]
pub(crate) mod tract_backend {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    use tract_onnx::prelude::*;

    use super::{Backend, OutputTensor, Threads};
    use crate::tract_ops::{swap_before_declutter, swap_slow_ops};
    use crate::DetectError;

    fn rt(e: impl std::fmt::Display) -> DetectError {
        DetectError::Runtime(e.to_string())
    }

    pub(super) struct TractBackend {
        state: TypedSimpleState,
        workers: Workers,
    }

    /// The model with its input fixed to `shape`, optimised, with our faster ops swapped in.
    fn plan(model: &[u8], shape: [usize; 4]) -> Result<TypedSimpleState, DetectError> {
        keep_freed_memory();
        tract_onnx::onnx()
            .model_for_read(&mut &model[..])
            .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
            .and_then(|m| m.into_typed())
            .and_then(|mut m| {
                swap_before_declutter(&mut m)?;
                m.into_optimized()
            })
            .and_then(|mut m| {
                swap_slow_ops(&mut m)?;
                m.into_runnable()?.spawn()
            })
            .map_err(|e| DetectError::Runtime(format!("cannot load the model: {e}")))
    }

    /// Where a run's ops do their work: this thread alone, or a pool of tract's.
    struct Workers {
        executor: Executor,
        /// Whether the pool's other threads wait for work within a run by spinning.
        spin: bool,
    }

    impl Workers {
        fn new(threads: Threads) -> Self {
            let executor = match threads.count {
                0 | 1 => Executor::SingleThread,
                n => Executor::multithread_with_name(n, "aegis-tract"),
            };
            Self {
                executor,
                spin: threads.spin,
            }
        }

        /// Runs `f` with tract's executor set to these workers, on one of the pool's threads
        /// if there is a pool. Each op that splits its work hands it to the pool. From a
        /// thread outside the pool, that wakes a pool thread, and the caller sleeps until the
        /// work is done: two wake-ups per op, and only the pool's threads work. From a pool
        /// thread, the op starts at once and the other threads take their share. Two threads,
        /// `aegis bench detector --backend tract --threads 2`: SSDLite 14.4–14.8 → 12.1–12.5 ms
        /// p50, CenterNet 33.3–34.2 → 29.0–29.5.
        ///
        /// With `spin`, the pool's other threads look for work without sleeping until `f`
        /// returns, as ONNX Runtime's do within a run, instead of waiting to be woken for
        /// each op: SSDLite 12.1–12.3 → 11.5–11.8 ms, CenterNet 29.2–29.8 → 27.2–28.6 (spinning
        /// without yielding; see `help_until`).
        fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
            let executor = &self.executor;
            let Executor::MultiThread(pool) = executor else {
                return multithread_tract_scope(executor.clone(), f);
            };
            pool.install(|| {
                let done = AtomicBool::new(false);
                let caller = rayon::current_thread_index();
                rayon::scope(|scope| {
                    if self.spin {
                        for _ in 1..pool.current_num_threads() {
                            scope.spawn(|_| help_until(&done, caller));
                        }
                    }
                    // Set when `f` ends, returning or panicking, so that the helpers end too.
                    let _done = SetOnDrop(&done);
                    multithread_tract_scope(executor.clone(), f)
                })
            })
        }
    }

    /// On a pool thread other than `caller`'s: does the pool's work as it comes, until
    /// `done`. While there is none it yields the core, never sleeping: another thread that
    /// wants the core (another camera's decoding, the web server) gets it at once rather than
    /// at the scheduler's next tick, and this one is back within microseconds. Two threads,
    /// against spinning without yielding, six alternating rounds on SSDLite: 11.4–14.6 ms p50
    /// against 11.5–20.5.
    fn help_until(done: &AtomicBool, caller: Option<usize>) {
        // The caller may take this job back while it waits for its own work: it returns.
        if rayon::current_thread_index() == caller {
            return;
        }
        while !done.load(Ordering::Acquire) {
            if rayon::yield_now() != Some(rayon::Yield::Executed) {
                std::thread::yield_now();
            }
        }
    }

    struct SetOnDrop<'a>(&'a AtomicBool);

    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// tract allocates each op's output afresh on every run. glibc hands large blocks back to
    /// the kernel when they are freed (unmapping them, or trimming the heap). Depending on the
    /// order of the first run's allocations, each CenterNet run then faulted about 9,000 pages
    /// back in: a fifth of its time, in the kernel. With blocks under 64 MiB kept in the heap,
    /// and up to 256 MiB of freed heap kept, the next run reuses them. This holds for the whole
    /// process, which keeps its peak heap instead.
    fn keep_freed_memory() {
        #[cfg(target_env = "gnu")]
        {
            static ONCE: std::sync::Once = std::sync::Once::new();
            // SAFETY: mallopt only sets the allocator's thresholds.
            ONCE.call_once(|| unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            });
        }
    }

    impl TractBackend {
        pub(super) fn new(
            model: &[u8],
            shape: [usize; 4],
            threads: Threads,
        ) -> Result<Self, DetectError> {
            Ok(Self {
                state: plan(model, shape)?,
                workers: Workers::new(threads),
            })
        }
    }

    /// Runs the model `runs` times on a blank input of `shape`; returns the mean time per run
    /// of each kind of operation, or with `per_node` of each node (its kind, name and input
    /// shapes), slowest first.
    pub(crate) fn profile(
        model: &[u8],
        shape: [usize; 4],
        threads: usize,
        runs: usize,
        per_node: bool,
    ) -> Result<Vec<(String, f64)>, DetectError> {
        let mut state = plan(model, shape)?;
        let input = Tensor::zero::<f32>(&shape).map_err(rt)?;
        let mut ms: HashMap<String, f64> = HashMap::new();
        Workers::new(Threads::new(threads))
            .run(|| {
                for _ in 0..runs {
                    state.run_plan_with_eval(
                        tvec!(input.clone().into()),
                        |ctx, op_state, node, inputs| {
                            let mut key = node.op().name().to_string();
                            if per_node {
                                let shapes: Vec<_> = inputs.iter().map(|i| i.shape()).collect();
                                key = format!("{key} {} {shapes:?}", node.name);
                            }
                            let started = Instant::now();
                            let outputs =
                                tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                            *ms.entry(key).or_default() +=
                                started.elapsed().as_secs_f64() * 1e3 / runs as f64;
                            outputs
                        },
                    )?;
                }
                TractResult::Ok(())
            })
            .map_err(rt)?;
        let mut ms: Vec<(String, f64)> = ms.into_iter().collect();
        ms.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ms)
    }

    impl Backend for TractBackend {
        fn run(
            &mut self,
            input: &[f32],
            shape: [usize; 4],
        ) -> Result<Vec<OutputTensor>, DetectError> {
            let tensor = Tensor::from_shape(&shape, input).map_err(rt)?;
            let state = &mut self.state;
            let outputs = self
                .workers
                .run(|| state.run(tvec!(tensor.into())))
                .map_err(rt)?;
            outputs
                .iter()
                .map(|t| {
                    let view = t.to_plain_array_view::<f32>().map_err(rt)?;
                    Ok(OutputTensor {
                        shape: view.shape().to_vec(),
                        data: view.iter().copied().collect(),
                    })
                })
                .collect()
        }
    }
}

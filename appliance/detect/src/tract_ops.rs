//! Faster stand-ins for seven of tract's ops. Only f32 inputs are swapped; other types keep
//! tract's op.
//!
//! - TopK: tract's sorts the whole axis to keep k of it. CenterNet's head takes the best 100 of
//!   128 × 128 × 80 scores, and that sort was a quarter of the model's time (56 of 215 ms on one
//!   core here). Keeping the best k in a heap while reading the axis once takes about 3 ms;
//!   passing over blocks of values none of which beats the worst kept, 0.4 ms.
//! - Resize: tract resamples one axis at a time, and along the last axis (one value per output,
//!   no run of neighbours to work on together) its per-value overhead dominates: CenterNet's
//!   three upsamplings took 17 ms. The last two axes get plain loops over tract's own resampling
//!   plans (the same taps and weights, added in the same order), an output row at a time,
//!   without the tensor between the two axes: about 2 ms.
//! - Depthwise convolution: tract walks each output point's patch, and its depthwise
//!   convolutions were a third of CenterNet's time (50 of 140 ms on one core). Ours sums each
//!   block of 32 outputs of a row over all the filter's taps in registers, which the compiler
//!   vectorises: about 11 ms.
//! - 1 × 1 convolution: a matrix product per image. tract's packed products took 56 ms of
//!   CenterNet's time on one core (packing 9 of it); the `gemm` crate's take about 30.
//! - Max pool: the depthwise convolution's sliding window, taking the largest value: CenterNet's
//!   one pool, 2.3 → 0.6 ms.
//! - Moving an axis (a transpose): through a tile on the stack, an f32 at a time; tract's moves
//!   bytes. A move that undoes the one before it is dropped. CenterNet's four moves took
//!   4.4 ms; its three left take 2.3.
//! - A convolution of an image's few colours (its first): tract's direct convolution, and the
//!   activation after it as a pass of its own, took SSDLite 0.86–0.88 ms. Its patches as an
//!   image of 27 channels (im2col) and our 1 × 1 product over them, the activation folded in:
//!   0.53.
//!
//! Our convolutions also take in the ReLU, ReLU6 or hard-swish after them (the depthwise one a
//! plane at a time, while it is in cache), in place of tract's ops for those, a pass over the
//! whole output each.
//!
//! Between our convolutions, images go pixel by pixel (NHWC) where that is faster (see
//! [`pixels_between_convolutions`]): a depthwise convolution of short rows and many channels
//! then sums whole vectors of channels, where over planes it sums rows of 19 or 10 in vectors
//! of 8. SSDLite's depthwise layers of 19 × 19 and less take 35–55% less time, and its 1 × 1
//! products write and read pixels in one product as they do planes. One thread: 9.5–10.3 →
//! 8.7–9.4 ms.
//!
//! TopK, Resize, the max pool and the axis moves give exactly tract's answer. TopK, Resize and
//! the axis moves are swapped into the optimised plan. The convolutions add in their own order
//! (equal to tract's within rounding). The convolutions and the max pool replace tract's ops
//! before tract declutters them (it would turn a 1 × 1 convolution into a matrix product of its
//! own).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::iter;
use std::sync::Arc;

use gemm::Parallelism;
use rayon::prelude::*;
use tract_linalg::multithread::{current_tract_executor, par_chunks_mut, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::Topk;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PoolSpec};
use tract_onnx::tract_core::ops::nn::resize::{resample_axis, AxisPlan, Resize};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// `impl Op` for one of our ops: its name (the type's, as profiles show it), and typed.
macro_rules! named_op {
    ($op:ident) => {
        impl Op for $op {
            fn name(&self) -> StaticName {
                stringify!($op).into()
            }

            op_as_typed_op!();
        }
    };
}

/// A method `$name` of `$ty` that runs `$portable` (an `#[inline(always)]` method taking the
/// same arguments) compiled for AVX-512 where the CPU has it, else for AVX2 where it has that,
/// else as it is: the same code, its loops vectorised for the widest registers there are.
macro_rules! widest_vectors {
    (
        $(#[$doc:meta])*
        $ty:ty, fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $arg_ty:ty),* $(,)?)
            => $portable:ident
    ) => {
        $(#[$doc])*
        fn $name $(<$g: $bound>)? (&self, $($arg: $arg_ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<$g: $bound>)? (this: &$ty, $($arg: $arg_ty),*) {
                    this.$portable($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2 $(<$g: $bound>)? (this: &$ty, $($arg: $arg_ty),*) {
                    this.$portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: this CPU has AVX-512, checked just above.
                    return unsafe { avx512(self, $($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: this CPU has AVX2, checked just above.
                    return unsafe { avx2(self, $($arg),*) };
                }
            }
            self.$portable($($arg),*)
        }
    };
}

/// Replaces every f32 TopK in `model` with [`SelectTopk`], every f32 Resize with
/// [`RowResize`], and every move of an f32 tensor's axis with [`TiledMoveAxis`], once moves
/// that undo the move before them are gone.
pub(crate) fn swap_slow_ops(model: &mut TypedModel) -> TractResult<()> {
    // Patching appends the new nodes: the ones there now keep their ids.
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let [input] = node.inputs[..] else {
            continue;
        };
        let (Some(&AxisOp::Move(from, to)), Some(&AxisOp::Move(back, forth))) = (
            node.op_as::<AxisOp>(),
            model.node(input.node).op_as::<AxisOp>(),
        ) else {
            continue;
        };
        // CenterNet moves its heat map's channels last, and back for the max pool: tract keeps
        // both moves because the channels-last map has other readers.
        if (from, to) == (forth, back) {
            let before = &model.node(input.node).inputs;
            TypedModelPatch::rewire(model, before, &[id.into()], &|_, x| Ok(x.into()))?
                .apply(model)?;
        }
    }
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let op: Box<dyn TypedOp> = if let Some(topk) = node.op_as::<Topk>() {
            Box::new(SelectTopk(topk.clone()))
        } else if let Some(resize) = node.op_as::<Resize>() {
            Box::new(RowResize(resize.clone()))
        } else if let Some(&AxisOp::Move(from, to)) = node.op_as::<AxisOp>() {
            Box::new(TiledMoveAxis { from, to })
        } else {
            continue;
        };
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?.apply(model)?;
    }
    Ok(())
}

/// Replaces, in the typed `model` before tract declutters and optimises it, every f32
/// depthwise convolution over NCHW images with [`PlaneDepthwise`], every f32 1 × 1 convolution
/// over them with [`Pointwise`], and every f32 max pool over them with [`PlaneMaxPool`]; then
/// folds into our convolutions the ReLU, ReLU6 or hard-swish after them.
pub(crate) fn swap_before_declutter(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let op: Box<dyn TypedOp> = {
            let facts = model.node_facts(id)?.0;
            if let Some(conv) = node.op_as::<Conv>() {
                if let Some(op) = PlaneDepthwise::for_conv(conv, &facts) {
                    Box::new(op)
                } else if let Some(op) = Pointwise::for_conv(conv, &facts) {
                    Box::new(op)
                } else if let Some(ops) = Patches::for_conv(conv, &facts) {
                    drop(facts);
                    Patches::swap_in(model, id, ops)?;
                    continue;
                } else {
                    continue;
                }
            } else if let Some(pool) = node.op_as::<MaxPool>() {
                match facts
                    .first()
                    .and_then(|fact| PlaneMaxPool::for_pool(pool, fact))
                {
                    Some(op) => Box::new(op),
                    None => continue,
                }
            } else {
                continue;
            }
        };
        TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?.apply(model)?;
    }
    fuse_activations(model)?;
    pixels_between_convolutions(model)
}

/// ONNX TopK over an f32 axis: the k largest (or smallest) values and their indices, best first,
/// equal values in the order of their index (as ONNX specifies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SelectTopk(Topk);

/// One candidate on the axis. `Less` means it ranks earlier in the output.
#[derive(Clone, Copy)]
struct Candidate {
    value: f32,
    index: usize,
    largest: bool,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_value = self.value.total_cmp(&other.value);
        let by_value = if self.largest {
            by_value.reverse()
        } else {
            by_value
        };
        by_value.then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Candidate {}

impl Op for SelectTopk {
    fn name(&self) -> StaticName {
        "SelectTopk".into()
    }

    fn mints_runtime_symbols(&self) -> bool {
        self.0.mints_runtime_symbols()
    }

    op_as_typed_op!();
}

impl SelectTopk {
    /// Leaves the best `k` of `values` in `best`. Blocks of 16 values none of which beats the
    /// worst of a full `best` are passed over with one comparison each, which the compiler
    /// vectorises: most of CenterNet's 1.3 M scores are zeros.
    fn keep_best(&self, values: &[f32], k: usize, best: &mut BinaryHeap<Candidate>) {
        let largest = self.0.largest;
        // The order of `f32::total_cmp` as integers, the best greatest.
        let key = |value: f32| {
            let bits = value.to_bits() as i32;
            let key = bits ^ (((bits >> 31) as u32) >> 1) as i32;
            if largest {
                key
            } else {
                !key
            }
        };
        const BLOCK: usize = 16;
        for (b, block) in values.chunks(BLOCK).enumerate() {
            if let Some(worst) = best.peek().filter(|_| best.len() == k) {
                // An equal value comes later on the axis, so it ranks below the worst too.
                let bar = key(worst.value);
                if !block.iter().fold(false, |beats, &v| beats | (key(v) > bar)) {
                    continue;
                }
            }
            for (j, &value) in block.iter().enumerate() {
                let c = Candidate {
                    value,
                    index: b * BLOCK + j,
                    largest,
                };
                if best.len() < k {
                    best.push(c);
                } else if let Some(mut worst) = best.peek_mut() {
                    if c < *worst {
                        *worst = c;
                    }
                }
            }
        }
    }
}

impl EvalOp for SelectTopk {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, k) = args_2!(inputs);
        let k = usize::try_from(k.cast_to_scalar::<i64>()?)?;
        let shape = input.shape();
        let axis = self.0.axis;
        let n = shape[axis];
        ensure!(k <= n, "TopK asks for {k} of an axis of {n}");
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let data = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut values = vec![0f32; outer * k * inner];
        let mut indices = vec![0i64; outer * k * inner];
        // A max-heap of the best k so far: its top is the worst of them, the one to beat.
        let mut best = BinaryHeap::with_capacity(k);
        let mut axis_values = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let on_axis = if inner == 1 {
                    &data[o * n..][..n]
                } else {
                    axis_values.clear();
                    axis_values.extend((0..n).map(|index| data[(o * n + index) * inner + i]));
                    &axis_values[..]
                };
                self.keep_best(on_axis, k, &mut best);
                let ranked = std::mem::take(&mut best).into_sorted_vec();
                for (rank, c) in ranked.iter().enumerate() {
                    values[(o * k + rank) * inner + i] = c.value;
                    indices[(o * k + rank) * inner + i] = c.index as i64;
                }
            }
        }
        let mut out_shape: TVec<usize> = shape.into();
        out_shape[axis] = k;
        Ok(tvec!(
            Tensor::from_shape(&out_shape, &values)?.into_tvalue(),
            Tensor::from_shape(&out_shape, &indices)?.into_tvalue()
        ))
    }
}

impl TypedOp for SelectTopk {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// ONNX Resize over f32, as tract's [`Resize`] computes it, with tight loops for the last two
/// axes (an image's rows and columns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RowResize(Resize);

named_op!(RowResize);

impl EvalOp for RowResize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let r = &self.0;
        let input = &inputs[0];
        let scales_in = r.optional_scales_input.and_then(|ix| inputs.get(ix));
        let sizes_in = r.optional_sizes_input.and_then(|ix| inputs.get(ix));
        let out_shape = r.compute_output_shape(
            input.shape(),
            scales_in.map(|t| &**t),
            sizes_in.map(|t| &**t),
        )?;
        let scales: TVec<f32> = match scales_in.filter(|s| s.len() == input.rank()) {
            Some(s) => s.try_as_plain_ram()?.as_slice::<f32>()?.into(),
            None => out_shape
                .iter()
                .zip(input.shape())
                .map(|(o, i)| *o as f32 / *i as f32)
                .collect(),
        };
        let rank = input.rank();
        let plan = |axis: usize, shape: &[usize]| {
            let (len_in, len_out) = (shape[axis], out_shape[axis]);
            let unchanged = len_in == len_out && scales[axis] == 1.0;
            (!unchanged).then(|| r.plan_axis(scales[axis], len_in, len_out))
        };
        // Every axis but the last two as tract does, one after the other.
        let mut shape: TVec<usize> = input.shape().into();
        let mut data = std::borrow::Cow::Borrowed(input.try_as_plain_ram()?.as_slice::<f32>()?);
        for axis in 0..rank.saturating_sub(2) {
            let Some(plan) = plan(axis, &shape) else {
                continue;
            };
            let mut out = vec![0f32; data.len() / shape[axis].max(1) * out_shape[axis]];
            resample_axis(&data, &shape, axis, &plan, 0.0, &mut out);
            data = out.into();
            shape[axis] = out_shape[axis];
        }
        // The last two together, a row at a time.
        let (vertical, height) = match rank {
            0 => bail!("resizing a scalar"),
            1 => (None, 1),
            _ => (plan(rank - 2, &shape), shape[rank - 2]),
        };
        let horizontal = plan(rank - 1, &shape);
        let mut output = if data.is_empty() {
            Tensor::zero::<f32>(&out_shape)?
        } else {
            // SAFETY: every f32 is valid, and `resample_planes` writes every output row.
            unsafe { Tensor::uninitialized::<f32>(&out_shape)? }
        };
        let mut out = output.try_as_plain_ram_mut()?;
        resample_planes(
            &data,
            [height, shape[rank - 1]],
            vertical.as_ref(),
            horizontal.as_ref(),
            out.as_slice_mut::<f32>()?,
        )?;
        Ok(tvec!(output.into_tvalue()))
    }
}

/// Resamples each `h × w` plane of `input` by the `vertical` and then the `horizontal` plan
/// (`None`: that axis is unchanged), into `output`, an output row at a time. The same sums, in
/// the same order, as tract's `resample_axis` on one axis and then the other, without their
/// intermediate tensor, and without its per-value overhead along the last axis.
fn resample_planes(
    input: &[f32],
    [h, w]: [usize; 2],
    vertical: Option<&AxisPlan>,
    horizontal: Option<&AxisPlan>,
    output: &mut [f32],
) -> TractResult<()> {
    let oh = vertical.map_or(h, |p| p.extrapolated.len());
    let ow = horizontal.map_or(w, |p| p.extrapolated.len());
    if h * w == 0 || oh * ow == 0 {
        return Ok(());
    }
    // Planes split across tract's executor (all inline on one thread).
    let work = output.len();
    par_chunks_mut(output, oh * ow, work, |first, planes| {
        let mut between = vec![0f32; w];
        let input = &input[first * h * w..];
        for (src, dst) in input
            .chunks_exact(h * w)
            .zip(planes.chunks_exact_mut(oh * ow))
        {
            resample_plane(src, w, vertical, horizontal, dst, &mut between);
        }
        Ok(())
    })
}

/// One plane of [`resample_planes`], rows of `w`; `between` holds one.
fn resample_plane(
    src: &[f32],
    w: usize,
    vertical: Option<&AxisPlan>,
    horizontal: Option<&AxisPlan>,
    dst: &mut [f32],
    between: &mut [f32],
) {
    let ow = horizontal.map_or(w, |p| p.extrapolated.len());
    for (oy, out_row) in dst.chunks_exact_mut(ow).enumerate() {
        let row = match vertical {
            None => &src[oy * w..][..w],
            Some(plan) => {
                between.fill(0.0);
                if !plan.extrapolated[oy] {
                    let taps = &plan.indices[oy * plan.window..][..plan.window];
                    let weights = &plan.weights[oy * plan.window..][..plan.window];
                    for (&i, &weight) in taps.iter().zip(weights) {
                        if weight != 0.0 {
                            for (b, &s) in between.iter_mut().zip(&src[i * w..][..w]) {
                                *b += weight * s;
                            }
                        }
                    }
                }
                &between[..]
            }
        };
        match horizontal {
            None => out_row.copy_from_slice(row),
            Some(plan) => resample_row(row, plan, out_row),
        }
    }
}

/// Resamples one row by `plan`.
fn resample_row(row: &[f32], plan: &AxisPlan, output: &mut [f32]) {
    // Nearest, linear and cubic resampling, each with its window a constant.
    match plan.window {
        1 => resample_row_window(row, plan, output, 1),
        2 => resample_row_window(row, plan, output, 2),
        4 => resample_row_window(row, plan, output, 4),
        window => resample_row_window(row, plan, output, window),
    }
}

/// [`resample_row`] for windows of `window` taps, without branches: a tap of weight 0 adds 0
/// where tract skips it, the same sum (even where the value is infinite, as its product is not
/// added). Branching on each tap took twice as long.
#[inline(always)]
fn resample_row_window(row: &[f32], plan: &AxisPlan, output: &mut [f32], window: usize) {
    let taps = plan.indices.chunks_exact(window);
    let weights = plan.weights.chunks_exact(window);
    for (((d, taps), weights), &outside) in output
        .iter_mut()
        .zip(taps)
        .zip(weights)
        .zip(&plan.extrapolated)
    {
        let mut sum = 0.0;
        for (&i, &w) in taps.iter().zip(weights) {
            let term = w * row[i];
            sum += if w != 0.0 { term } else { 0.0 };
        }
        *d = if outside { 0.0 } else { sum };
    }
}

impl TypedOp for RowResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// tract's move of one axis of an f32 tensor to another place: a transpose of the `p × q`
/// blocks the axis moves across, in tiles, an f32 at a time. tract's moves bytes, a value's
/// worth at a time: CenterNet's four moves of its input and heat map took 4.4 ms on one thread;
/// its three left (one is dropped, see [`swap_slow_ops`]) take 2.3.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TiledMoveAxis {
    from: usize,
    to: usize,
}

named_op!(TiledMoveAxis);

impl EvalOp for TiledMoveAxis {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        let (from, to) = (self.from, self.to);
        ensure!(
            from < shape.len() && to < shape.len(),
            "moving axis {from} to {to} of a {shape:?} tensor"
        );
        let natural = shape
            .iter()
            .rev()
            .scan(1, |stride, &len| {
                let this = *stride;
                *stride *= len as isize;
                Some(this)
            })
            .eq(input.strides().iter().rev().copied());
        if !natural {
            return Ok(tvec!(input.moved_axis(from, to)?.into_tvalue()));
        }
        let product = |axes: &[usize]| axes.iter().product::<usize>();
        // The input is blocks of [p, q, inner], the output's of [q, p, inner].
        let (p, q, inner) = if from < to {
            let rest = &shape[from..];
            (
                rest[0],
                product(&rest[1..=to - from]),
                product(&rest[to - from + 1..]),
            )
        } else {
            let rest = &shape[to..];
            (
                product(&rest[..from - to]),
                rest[from - to],
                product(&rest[from - to + 1..]),
            )
        };
        let mut out_shape: TVec<usize> = shape.into();
        let moved = out_shape.remove(from);
        out_shape.insert(to, moved);
        let src = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: every f32 is valid, and `transpose` writes every value.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut dst = output.try_as_plain_ram_mut()?;
        let dst = dst.as_slice_mut::<f32>()?;
        let block = p * q * inner;
        if block > 0 {
            for (src, dst) in src.chunks_exact(block).zip(dst.chunks_exact_mut(block)) {
                if q < TILE && inner == 1 {
                    few_rows(src, dst, [p, q]);
                    continue;
                }
                // Rows of the output split across tract's executor (all inline on one thread).
                par_chunks_mut(dst, p * inner, block, |first, rows| {
                    transpose(src, rows, first, [p, q], inner);
                    Ok(())
                })?;
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// The pool of more than one thread that tract was given for this run, if it was.
fn tract_pool() -> Option<Arc<rayon::ThreadPool>> {
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => Some(pool),
        _ => None,
    }
}

/// [`transpose`] of single values into fewer than [`TILE`] rows of `dst`, long ones (an image's
/// channels moved first): each of tract's threads takes a stretch of every row. Split by rows,
/// each thread read all of `src` for its one row or two, and two threads took longer than one.
/// The input moves on two threads: SSDLite's 0.30 → 0.12 ms, CenterNet's (its moves 1.6–1.7 →
/// 1.25 ms in all); one thread, as before.
fn few_rows(src: &[f32], dst: &mut [f32], [p, q]: [usize; 2]) {
    let pool = tract_pool();
    let threads = pool.as_ref().map_or(1, |pool| pool.current_num_threads());
    let width = p.div_ceil(threads).max(1);
    let mut stretches: Vec<Vec<&mut [f32]>> = (0..p.div_ceil(width)).map(|_| Vec::new()).collect();
    for row in dst.chunks_exact_mut(p) {
        for (stretch, piece) in stretches.iter_mut().zip(row.chunks_mut(width)) {
            stretch.push(piece);
        }
    }
    let copy = |(k, mut rows): (usize, Vec<&mut [f32]>)| {
        let src = &src[k * width * q..];
        // In blocks of 256 source rows, which stay in cache while each output row reads them.
        for start in (0..rows[0].len()).step_by(256) {
            let end = (start + 256).min(rows[0].len());
            for (j, row) in rows.iter_mut().enumerate() {
                let column = src[start * q + j..].iter().step_by(q);
                for (d, &s) in row[start..end].iter_mut().zip(column) {
                    *d = s;
                }
            }
        }
    };
    match pool {
        Some(pool) => pool.install(|| stretches.into_par_iter().enumerate().for_each(copy)),
        None => stretches.into_iter().enumerate().for_each(copy),
    }
}

/// Copies into `dst` its rows of the `q × p` transpose of `src`, a `p × q` matrix of runs of
/// `inner` values: rows `first`, `first + 1`, and on.
fn transpose(src: &[f32], dst: &mut [f32], first: usize, [p, q]: [usize; 2], inner: usize) {
    if inner > 1 {
        for (j, row) in (first..).zip(dst.chunks_exact_mut(p * inner)) {
            for (i, run) in row.chunks_exact_mut(inner).enumerate() {
                run.copy_from_slice(&src[(i * q + j) * inner..][..inner]);
            }
        }
        return;
    }
    // Single values go through a 16 × 16 tile on the stack: read as 16 runs of src, written as
    // 16 runs of dst. Moving values straight between the two, a tile's 16 runs of dst lie a
    // power of two apart for CenterNet's heat map, compete for the same cache lines, and took
    // five times as long.
    let mut tile = [[0f32; TILE]; TILE];
    let rows = dst.len() / p;
    for i0 in (0..p).step_by(TILE) {
        let ti = TILE.min(p - i0);
        for j0 in (0..rows).step_by(TILE) {
            let (src, dst) = (&src[i0 * q + first + j0..], &mut dst[j0 * p + i0..]);
            match (ti, TILE.min(rows - j0)) {
                (TILE, TILE) => through_tile(src, q, dst, p, &mut tile, [TILE, TILE]),
                sizes => through_tile(src, q, dst, p, &mut tile, sizes.into()),
            }
        }
    }
}

const TILE: usize = 16;

/// Copies the `ti × tj` corner of `src` (rows `q` apart) into `dst` (rows `p` apart),
/// transposed, through `tile`. Called with constant sizes, the compiler unrolls it.
#[inline(always)]
fn through_tile(
    src: &[f32],
    q: usize,
    dst: &mut [f32],
    p: usize,
    tile: &mut [[f32; TILE]; TILE],
    [ti, tj]: [usize; 2],
) {
    for (a, run) in src.chunks(q).take(ti).enumerate() {
        for (b, &v) in run[..tj].iter().enumerate() {
            tile[b][a] = v;
        }
    }
    for (b, values) in tile[..tj].iter().enumerate() {
        dst[b * p..][..ti].copy_from_slice(&values[..ti]);
    }
}

impl TypedOp for TiledMoveAxis {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let moved = shape.remove(self.from);
        shape.insert(self.to, moved);
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// What one of our convolutions applies to each of its outputs, in place of the nodes after it
/// that tract would run as ops of their own, each a pass over the whole output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Activation {
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `(scale · x) · min(max(x + 3, 0), 6)`: hard-swish as MobileNetV3's exports spell it,
    /// `scale` (about 1/6) as the bits of an f32.
    HardSwish {
        scale: u32,
    },
}

impl Activation {
    /// Adds to each of `values` its bias, the next of `biases`, then applies the activation, in
    /// the order of operations of the nodes it replaces.
    #[inline(always)]
    fn apply(self, values: &mut [f32], biases: impl Iterator<Item = f32>) {
        let values = values.iter_mut().zip(biases);
        match self {
            Self::Identity => {
                for (v, bias) in values {
                    *v += bias;
                }
            }
            // `f32::max` and `min`, not a compare and select: the compiler made that a masked
            // store of the values that change, which took five times as long.
            Self::Relu => {
                for (v, bias) in values {
                    *v = (*v + bias).max(0.0);
                }
            }
            Self::Relu6 => {
                for (v, bias) in values {
                    *v = (*v + bias).clamp(0.0, 6.0);
                }
            }
            Self::HardSwish { scale } => {
                let scale = f32::from_bits(scale);
                for (v, bias) in values {
                    let x = *v + bias;
                    *v = scale * x * (x + 3.0).clamp(0.0, 6.0);
                }
            }
        }
    }

    /// [`Self::apply`], vectorised with AVX2 where the CPU has it.
    fn apply_avx2_if_any(self, values: &mut [f32], biases: impl Iterator<Item = f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2, checked just above.
            return unsafe { self.apply_avx2(values, biases) };
        }
        self.apply(values, biases)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn apply_avx2(self, values: &mut [f32], biases: impl Iterator<Item = f32>) {
        self.apply(values, biases)
    }

    /// The activation that the nodes after `conv`'s output make, if they make one: returns it
    /// and the node whose output is the activated one.
    fn after(model: &TypedModel, conv: usize) -> Option<(Self, usize)> {
        let x = OutletId::new(conv, 0);
        if model.outputs.contains(&x) {
            return None;
        }
        let output = model.node(conv).outputs.first()?;
        let readers: TVec<usize> = output.successors.iter().map(|i| i.node).collect();
        match readers[..] {
            // ReLU, max(x, 0), and ReLU6, min(max(x, 0), 6).
            [max] => {
                if bin_op(model, max, x, "Max")? != 0.0 {
                    return None;
                }
                let relu6 = sole_reader(model, max)
                    .filter(|&min| bin_op(model, min, OutletId::new(max, 0), "Min") == Some(6.0));
                Some(match relu6 {
                    Some(min) => (Self::Relu6, min),
                    None => (Self::Relu, max),
                })
            }
            // Hard-swish: (scale · x) · min(max(x + 3, 0), 6).
            [a, b] => {
                let (scaled, plus, scale) =
                    match (bin_op(model, a, x, "Mul"), bin_op(model, b, x, "Mul")) {
                        (Some(scale), _) => (a, b, scale),
                        (None, Some(scale)) => (b, a, scale),
                        (None, None) => return None,
                    };
                let relu6 =
                    (bin_op(model, plus, x, "Add")? == 3.0).then(|| sole_reader(model, plus))??;
                let clipped = (bin_op(model, relu6, OutletId::new(plus, 0), "Max")? == 0.0)
                    .then(|| sole_reader(model, relu6))??;
                let product = (bin_op(model, clipped, OutletId::new(relu6, 0), "Min")? == 6.0)
                    .then(|| sole_reader(model, clipped))??;
                let together = sole_reader(model, scaled)? == product
                    && model.node(product).inputs.len() == 2
                    && model.node(product).op_as::<TypedBinOp>()?.0.name() == "Mul";
                together.then_some((
                    Self::HardSwish {
                        scale: scale.to_bits(),
                    },
                    product,
                ))
            }
            _ => None,
        }
    }
}

/// If node `id` is the binary op `name` of `input` and a constant f32 scalar (in either order),
/// that scalar.
fn bin_op(model: &TypedModel, id: usize, input: OutletId, name: &str) -> Option<f32> {
    let node = model.node(id);
    if node.op_as::<TypedBinOp>()?.0.name() != name {
        return None;
    }
    let &[a, b] = &node.inputs[..] else {
        return None;
    };
    let other = match (a == input, b == input) {
        (true, false) => b,
        (false, true) => a,
        _ => return None,
    };
    let konst = model.outlet_fact(other).ok()?.konst.as_ref()?;
    let values = konst.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?;
    match values {
        &[value] => Some(value),
        _ => None,
    }
}

/// The one node reading node `id`'s output, if it has one reader and is not a model output.
fn sole_reader(model: &TypedModel, id: usize) -> Option<usize> {
    let out = OutletId::new(id, 0);
    match &model.node(id).outputs.first()?.successors[..] {
        [reader] if !model.outputs.contains(&out) => Some(reader.node),
        _ => None,
    }
}

/// Folds into each of our convolutions in `model` the activation that the nodes after it make
/// (see [`Activation::after`]).
fn fuse_activations(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some((activation, last)) = Activation::after(model, id) else {
            continue;
        };
        let fused: Box<dyn TypedOp> = if let Some(op) = node.op_as::<Pointwise>() {
            Box::new(Pointwise {
                activation,
                ..op.clone()
            })
        } else if let Some(op) = node.op_as::<PlaneDepthwise>() {
            Box::new(PlaneDepthwise {
                activation,
                ..op.clone()
            })
        } else {
            continue;
        };
        let name = format!("{}.{activation:?}", node.name);
        TypedModelPatch::rewire(model, &node.inputs, &[last.into()], &|patch, inputs| {
            patch.wire_node(&name, fused.clone(), inputs)
        })?
        .apply(model)?;
    }
    Ok(())
}

/// The channels, height and width of images of `fact` laid out as `format` says, if they are
/// f32, channel-major (NCHW, or CHW without the batch axis) and of known size.
fn channel_major(fact: &TypedFact, format: DataFormat) -> Option<[usize; 3]> {
    let shape = fact.shape.as_concrete()?;
    let channel_major = matches!(format, DataFormat::NCHW | DataFormat::CHW)
        && shape.len() == 3 + usize::from(format.has_n())
        && fact.datum_type == f32::datum_type();
    channel_major.then(|| {
        [
            shape[shape.len() - 3],
            shape[shape.len() - 2],
            shape[shape.len() - 1],
        ]
    })
}

/// What both convolution ops ask of `conv` with inputs of `facts` (image, filters, bias): f32
/// all through, a channel-major image (NCHW or CHW) of known size, a 2-D filter in OIHW order,
/// and a bias of one value or one per output channel. Returns the image's channels, height and
/// width, and the filter's height and width.
fn plain_conv(conv: &Conv, facts: &[&TypedFact]) -> Option<([usize; 3], [usize; 2])> {
    let spec = &conv.pool_spec;
    let [image, filters, bias] = facts else {
        return None;
    };
    let [channels, height, width] = channel_major(image, spec.data_format)?;
    let &[kh, kw] = &spec.kernel_shape[..] else {
        return None;
    };
    let f32_only = [filters, bias]
        .iter()
        .all(|f| f.datum_type == f32::datum_type());
    let outputs = spec.output_channels;
    let bias_len = bias.shape.as_concrete()?.iter().product::<usize>();
    let plain = f32_only
        && conv.q_params.is_none()
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.input_channels == channels
        && conv.group > 0
        && filters.shape.as_concrete()? == [outputs, channels / conv.group, kh, kw]
        && (bias_len == 1 || bias_len == outputs);
    plain.then_some(([channels, height, width], [kh, kw]))
}

/// A 2-D sliding window over each plane of f32 images laid out channel by channel (NCHW, or
/// CHW without the batch axis): the geometry that [`PlaneDepthwise`] and [`PlaneMaxPool`] share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Window {
    /// Per spatial axis (height, width): the input's and the output's length, the window's,
    /// the stride, the dilation and the padding before the first value.
    input: [usize; 2],
    output: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad_before: [usize; 2],
}

impl Window {
    /// The window `spec` slides over planes of `height × width`, if it is 2-D and has an output.
    fn of(spec: &PoolSpec, [height, width]: [usize; 2]) -> Option<Self> {
        let &[kh, kw] = &spec.kernel_shape[..] else {
            return None;
        };
        let padding = spec.computed_padding(&[height, width]);
        let (strides, dilations) = (spec.strides(), spec.dilations());
        let output = [padding[0].convoluted, padding[1].convoluted];
        if output.contains(&0) || kh * kw == 0 {
            return None;
        }
        Some(Self {
            input: [height, width],
            output,
            kernel: [kh, kw],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_before: [padding[0].pad_before, padding[1].pad_before],
        })
    }

    /// The output's shape for an input of `shape` (its last two axes a plane).
    fn output_shape<D: Clone + From<usize>>(&self, shape: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = shape.into();
        let rank = shape.len();
        shape[rank - 2] = self.output[0].into();
        shape[rank - 1] = self.output[1].into();
        shape
    }

    /// Slides the window over each plane of `image`, into a new tensor: `reducer(channel)`
    /// reduces each window of that channel's planes. Planes are split across tract's executor
    /// (all inline on one thread).
    fn slide<R: Reduce>(
        &self,
        image: &Tensor,
        reducer: impl Fn(usize) -> R + Sync,
    ) -> TractResult<Tensor> {
        let shape = image.shape();
        let &[c, h, w] = &shape[shape.len().saturating_sub(3)..] else {
            bail!("a 2-D window over a {shape:?} image");
        };
        ensure!(
            [h, w] == self.input,
            "image of {h}×{w}, planned for {:?}",
            self.input
        );
        let image = image.try_as_plain_ram()?.as_slice::<f32>()?;
        let (plane_in, plane_out) = (h * w, self.output[0] * self.output[1]);
        // SAFETY: every f32 is valid, and every output row is written.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape(shape))? };
        let mut out = output.try_as_plain_ram_mut()?;
        let out = out.as_slice_mut::<f32>()?;
        let work = out.len() * self.kernel[0] * self.kernel[1];
        let padded = self.padded();
        par_chunks_mut(out, plane_out, work, |first, chunk| {
            let mut scratch = vec![R::PAD; padded.len];
            for (i, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                let plane = first + i;
                let image = &image[plane * plane_in..][..plane_in];
                self.plane(image, &reducer(plane % c), out, &mut scratch, &padded);
            }
            Ok(())
        })?;
        Ok(output)
    }

    /// Where a plane goes in the scratch buffer, and where each of the window's taps reads
    /// there: the same for every plane of a run. The plane is padded, and each of its rows
    /// dealt into `sx` runs (padded column x goes to run x % sx, place x / sx), so that a tap
    /// reads one contiguous stretch of a run for a whole output row.
    fn padded(&self) -> Padded {
        let w = self.input[1];
        let [oh, ow] = self.output;
        let [kh, kw] = self.kernel;
        let [sy, sx] = self.strides;
        let [dy, dx] = self.dilations;
        let run = (ow + (kw - 1) * dx / sx).max((w + self.pad_before[1]).div_ceil(sx));
        let rows = (oh - 1) * sy + (kh - 1) * dy + 1;
        // From the start of an output row's first padded row.
        let offsets = (0..kh * kw)
            .map(|k| {
                let (ky, x) = (k / kw, k % kw * dx);
                (ky * dy * sx + x % sx) * run + x / sx
            })
            .collect();
        Padded {
            run,
            len: rows * sx * run,
            offsets,
        }
    }

    widest_vectors! {
        /// One plane: `image` is its `input` plane, `out` its `output` plane. `scratch` holds
        /// the padded plane as `padded` lays it out; its padding holds `R::PAD`, and keeps it
        /// since only the image's places are written.
        Window, fn plane<R: Reduce>(
            image: &[f32],
            reducer: &R,
            out: &mut [f32],
            scratch: &mut [f32],
            padded: &Padded,
        ) => plane_portable
    }

    /// [`deal`]s the plane `image` into `scratch`, in runs of `run`.
    #[inline(always)]
    fn deal(&self, image: &[f32], scratch: &mut [f32], run: usize) {
        let w = self.input[1];
        // The common strides as constants, so that `deal` is compiled for each.
        match self.strides[1] {
            1 => deal(image, w, scratch, run, 1, self.pad_before),
            2 => deal(image, w, scratch, run, 2, self.pad_before),
            sx => deal(image, w, scratch, run, sx, self.pad_before),
        }
    }

    #[inline(always)]
    fn plane_portable<R: Reduce>(
        &self,
        image: &[f32],
        reducer: &R,
        out: &mut [f32],
        scratch: &mut [f32],
        padded: &Padded,
    ) {
        let sy = self.strides[0];
        let Padded {
            run, ref offsets, ..
        } = *padded;
        self.deal(image, scratch, run);
        let [oh, ow] = self.output;
        let step = sy * self.strides[1] * run;
        let mut oy = 0;
        // A register of sums waits at every tap for its add before: a block of 32 outputs is
        // four registers under way, a block of 8 one. So rows shorter than 32 go four at a
        // time, and longer ones two: eight registers (three rows were no faster). CenterNet's
        // depthwise convolutions, one thread: 10.0–11.4 → 9.5–9.9 ms.
        if ow < 32 {
            while oy + 4 <= oh {
                let (out, rows) = (&mut out[oy * ow..], &scratch[oy * step..]);
                row_blocks::<R, 4>(reducer, out, ow, rows, step, offsets);
                oy += 4;
            }
        } else {
            while oy + 2 <= oh {
                let (out, rows) = (&mut out[oy * ow..], &scratch[oy * step..]);
                row_blocks::<R, 2>(reducer, out, ow, rows, step, offsets);
                oy += 2;
            }
        }
        while oy < oh {
            let (out, rows) = (&mut out[oy * ow..], &scratch[oy * step..]);
            row_blocks::<R, 1>(reducer, out, ow, rows, step, offsets);
            oy += 1;
        }
        reducer.finish(out);
    }
}

/// `ROWS` output rows of `ow` (`out`, one after the other) from padded rows `step` apart
/// (`rows`): blocks of 32 outputs, then of 8, then one by one (short rows). Each block stays in
/// registers over all the window's taps. Plain loops and trait methods, not closures: a
/// closure is compiled on its own, without AVX2.
#[inline(always)]
fn row_blocks<R: Reduce, const ROWS: usize>(
    reducer: &R,
    out: &mut [f32],
    ow: usize,
    rows: &[f32],
    step: usize,
    offsets: &[usize],
) {
    let mut x = 0;
    while x + 32 <= ow {
        block::<R, ROWS, 32>(reducer, out, ow, rows, step, x, offsets);
        x += 32;
    }
    while x + 8 <= ow {
        block::<R, ROWS, 8>(reducer, out, ow, rows, step, x, offsets);
        x += 8;
    }
    if x < ow && ow >= 8 {
        // The last 8, some of them again (the same values): MobileNets' rows of 75, 38, 19
        // and 10 spent a sixth of their time on outputs one at a time.
        block::<R, ROWS, 8>(reducer, out, ow, rows, step, ow - 8, offsets);
        x = ow;
    }
    while x < ow {
        block::<R, ROWS, 1>(reducer, out, ow, rows, step, x, offsets);
        x += 1;
    }
}

/// A [`Window`]'s plane in its scratch buffer (see [`Window::padded`]).
struct Padded {
    /// The length of one run of a padded row.
    run: usize,
    /// The whole buffer's.
    len: usize,
    /// Where each tap reads, from the start of an output row's first padded row.
    offsets: TVec<usize>,
}

/// Copies the `w`-wide `image` into `scratch` below `pt` padding rows, after `pl` padding
/// columns, each padded row dealt into `sx` runs of `run`. Called with a constant `sx`, the
/// compiler vectorises the dealing.
#[inline(always)]
fn deal(image: &[f32], w: usize, scratch: &mut [f32], run: usize, sx: usize, [pt, pl]: [usize; 2]) {
    for (src, dst) in image
        .chunks_exact(w)
        .zip(scratch.chunks_exact_mut(sx * run).skip(pt))
    {
        // Image column j·sx + i goes to run (pl + i) % sx, place j + (pl + i) / sx.
        let (whole, rest) = src.split_at(w / sx * sx);
        for i in 0..sx {
            let start = (pl + i) % sx * run + (pl + i) / sx;
            let dst = &mut dst[start..start + whole.len() / sx];
            for (d, group) in dst.iter_mut().zip(whole.chunks_exact(sx)) {
                *d = group[i];
            }
        }
        for (i, &v) in rest.iter().enumerate() {
            let x = pl + whole.len() + i;
            dst[x % sx * run + x / sx] = v;
        }
    }
}

/// What a [`Window`] makes of the values under it: each output starts as [`Reduce::start`],
/// and folds in the value under each tap k in turn with that tap's weight.
trait Reduce: Sync {
    /// The padding's value.
    const PAD: f32;

    /// Where each output starts.
    fn start(&self) -> f32;

    /// Tap k's weight.
    fn weight(&self, k: usize) -> f32;

    /// `acc` with `value`, under a tap of `weight`, folded in.
    fn fold(acc: f32, weight: f32, value: f32) -> f32;

    /// Finishes a plane of outputs, while it is in cache.
    #[inline(always)]
    fn finish(&self, _plane: &mut [f32]) {}
}

/// `N` outputs from column `x` of each of `ROWS` output rows (row r's output i at
/// `out[r · ow + x + i]`), each from the values at `rows[r · step + offset + x + i]` for every
/// tap's offset. `ROWS` and `N` are constants so that the block stays in registers and the
/// compiler vectorises it.
#[inline(always)]
fn block<R: Reduce, const ROWS: usize, const N: usize>(
    reducer: &R,
    out: &mut [f32],
    ow: usize,
    rows: &[f32],
    step: usize,
    x: usize,
    offsets: &[usize],
) {
    let mut acc = [[reducer.start(); N]; ROWS];
    for (k, &offset) in offsets.iter().enumerate() {
        let weight = reducer.weight(k);
        for (r, acc) in acc.iter_mut().enumerate() {
            let taps = &rows[r * step + offset + x..][..N];
            for (a, &tap) in acc.iter_mut().zip(taps) {
                *a = R::fold(*a, weight, tap);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out[r * ow + x..][..N].copy_from_slice(acc);
    }
}

/// A depthwise convolution's reduction for one channel: its bias plus each tap's weight times
/// its value, added in the order of the taps; then its activation, a plane at a time (applied
/// to each block in registers, it took longer).
struct Weighted<'a> {
    filter: &'a [f32],
    bias: f32,
    activation: Activation,
}

impl Reduce for Weighted<'_> {
    const PAD: f32 = 0.0;

    #[inline(always)]
    fn start(&self) -> f32 {
        self.bias
    }

    #[inline(always)]
    fn weight(&self, k: usize) -> f32 {
        self.filter[k]
    }

    #[inline(always)]
    fn fold(acc: f32, weight: f32, value: f32) -> f32 {
        acc + weight * value
    }

    #[inline(always)]
    fn finish(&self, plane: &mut [f32]) {
        // The bias is in already.
        if self.activation != Activation::Identity {
            self.activation.apply(plane, iter::repeat(0.0));
        }
    }
}

/// A max pool's reduction: the largest value under the window (padding never wins).
struct Largest;

impl Reduce for Largest {
    const PAD: f32 = f32::NEG_INFINITY;

    #[inline(always)]
    fn start(&self) -> f32 {
        f32::NEG_INFINITY
    }

    #[inline(always)]
    fn weight(&self, _k: usize) -> f32 {
        1.0
    }

    #[inline(always)]
    fn fold(acc: f32, _weight: f32, value: f32) -> f32 {
        // A compare and select, which the compiler turns into one max instruction.
        if value > acc {
            value
        } else {
            acc
        }
    }
}

/// A depthwise convolution (one k × k filter per channel, `group` = channels) over f32 images
/// laid out channel by channel (NCHW, or CHW without the batch axis). Inputs: the images, the
/// filters `[C, 1, kh, kw]`, the bias (one per channel, or one for all).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PlaneDepthwise {
    channels: usize,
    window: Window,
    activation: Activation,
}

impl PlaneDepthwise {
    /// The op for `conv` with inputs of `facts` (image, filters, bias), if it is a depthwise
    /// convolution this op covers.
    fn for_conv(conv: &Conv, facts: &[&TypedFact]) -> Option<Self> {
        let ([channels, height, width], _) = plain_conv(conv, facts)?;
        let depthwise = conv.group == channels && conv.pool_spec.output_channels == channels;
        let window = depthwise
            .then(|| Window::of(&conv.pool_spec, [height, width]))
            .flatten()?;
        Some(Self {
            channels,
            window,
            activation: Activation::Identity,
        })
    }

    /// Whether [`PixelDepthwise`] runs this convolution faster: where its rows are short (fewer
    /// than 32 outputs, a block of ours) and it has channels enough to fill one of that op's
    /// blocks (64). One thread, per layer, planes → pixels: SSDLite's 576 channels of 19 × 19,
    /// 0.13 → 0.07 ms, 960 of 10 × 10, 0.08 → 0.05; CenterNet's 480 of 16 × 16, 0.06 → 0.04.
    /// Against: CenterNet's 72 channels of 128 × 128, 0.40 → 0.75; 18 channels, 0.17 → 1.63.
    fn faster_on_pixels(&self) -> bool {
        self.window.output[1] < 32 && self.channels >= 64
    }
}

named_op!(PlaneDepthwise);

impl EvalOp for PlaneDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, filters, bias) = args_3!(inputs);
        let filters = filters.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let taps = self.window.kernel[0] * self.window.kernel[1];
        let output = self.window.slide(&image, |channel| Weighted {
            filter: &filters[channel * taps..][..taps],
            bias: bias[channel % bias.len()],
            activation: self.activation,
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PlaneDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.window.output_shape(&inputs[0].shape))))
    }

    as_op!();
}

/// A depthwise convolution over f32 images laid out pixel by pixel (`[…, H, W, C]`), where
/// [`pixels_between_convolutions`] put them. Inputs: the images, the filters tap by tap
/// (`[kh · kw, C]`), the bias (one per channel, or one for all). Each output pixel's channels
/// are summed 64 at a time (then 32, then 8) over the taps that fall in the image, in
/// registers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PixelDepthwise {
    window: Window,
    activation: Activation,
}

named_op!(PixelDepthwise);

impl EvalOp for PixelDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, taps, bias) = args_3!(inputs);
        let shape = image.shape();
        let Some([c, h, w]) = Layout::Pixels.chw(shape) else {
            bail!("a depthwise convolution of a {shape:?} image");
        };
        ensure!(
            [h, w] == self.window.input,
            "image of {h}×{w}, planned for {:?}",
            self.window.input
        );
        let image = image.try_as_plain_ram()?.as_slice::<f32>()?;
        let taps = taps.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        let [kh, kw] = self.window.kernel;
        ensure!(
            taps.len() == kh * kw * c && !bias.is_empty(),
            "{} weights and {} biases for {kh}×{kw} taps of {c} channels",
            taps.len(),
            bias.len()
        );
        let bias: Vec<f32> = (0..c).map(|i| bias[i % bias.len()]).collect();
        let [oh, ow] = self.window.output;
        let out_shape = Layout::Pixels.with_chw(shape, [c, oh, ow]);
        // SAFETY: every f32 is valid, and every output row is written.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut out = output.try_as_plain_ram_mut()?;
        let out = out.as_slice_mut::<f32>()?;
        let work = out.len() * kh * kw;
        par_chunks_mut(out, ow * c, work, |first, rows| {
            let mut reads = TVec::new();
            for (i, row) in rows.chunks_exact_mut(ow * c).enumerate() {
                let (n, oy) = ((first + i) / oh, (first + i) % oh);
                let image = &image[n * h * w * c..][..h * w * c];
                self.row(image, taps, &bias, oy, row, &mut reads);
            }
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl PixelDepthwise {
    widest_vectors! {
        /// Output row `oy` of `image` into `out`. `reads` is room for where each output pixel
        /// reads: its taps' offsets in `taps`, and their pixels' in `image`.
        PixelDepthwise, fn row(
            image: &[f32],
            taps: &[f32],
            bias: &[f32],
            oy: usize,
            out: &mut [f32],
            reads: &mut TVec<(usize, usize)>,
        ) => row_portable
    }

    #[inline(always)]
    fn row_portable(
        &self,
        image: &[f32],
        taps: &[f32],
        bias: &[f32],
        oy: usize,
        out: &mut [f32],
        reads: &mut TVec<(usize, usize)>,
    ) {
        let Window {
            input: [h, w],
            kernel: [kh, kw],
            strides: [sy, sx],
            dilations: [dy, dx],
            pad_before: [pt, pl],
            ..
        } = self.window;
        let c = bias.len();
        let inside = |at: usize, pad: usize, len: usize| at.checked_sub(pad).filter(|&i| i < len);
        for (ox, out) in out.chunks_exact_mut(c).enumerate() {
            reads.clear();
            for ky in 0..kh {
                let Some(iy) = inside(oy * sy + ky * dy, pt, h) else {
                    continue;
                };
                for kx in 0..kw {
                    if let Some(ix) = inside(ox * sx + kx * dx, pl, w) {
                        reads.push(((ky * kw + kx) * c, (iy * w + ix) * c));
                    }
                }
            }
            let mut x = 0;
            while x + 64 <= c {
                self.channels::<64>(image, taps, bias, reads, out, x);
                x += 64;
            }
            while x + 32 <= c {
                self.channels::<32>(image, taps, bias, reads, out, x);
                x += 32;
            }
            while x + 8 <= c {
                self.channels::<8>(image, taps, bias, reads, out, x);
                x += 8;
            }
            if x < c && c >= 8 {
                // The last 8, some of them again (the same values).
                self.channels::<8>(image, taps, bias, reads, out, c - 8);
                x = c;
            }
            while x < c {
                self.channels::<1>(image, taps, bias, reads, out, x);
                x += 1;
            }
        }
    }

    /// Channels `x..x + N` of one output pixel: the bias, each of `reads` (a tap's offset in
    /// `taps`, its pixel's in `image`) in turn, then the activation. `N` is a constant so that
    /// the sums stay in registers and the compiler vectorises them.
    #[inline(always)]
    fn channels<const N: usize>(
        &self,
        image: &[f32],
        taps: &[f32],
        bias: &[f32],
        reads: &[(usize, usize)],
        out: &mut [f32],
        x: usize,
    ) {
        let mut acc = [0.0; N];
        acc.copy_from_slice(&bias[x..][..N]);
        for &(tap, at) in reads {
            let weights = &taps[tap + x..][..N];
            let values = &image[at + x..][..N];
            for ((a, &weight), &value) in acc.iter_mut().zip(weights).zip(values) {
                *a += weight * value;
            }
        }
        self.activation.apply(&mut acc, iter::repeat(0.0));
        out[x..][..N].copy_from_slice(&acc);
    }
}

impl TypedOp for PixelDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let Some([c, ..]) = Layout::Pixels.chw(shape) else {
            bail!("a depthwise convolution of a {shape:?} image");
        };
        let [oh, ow] = self.window.output.map(TDim::from);
        Ok(tvec!(f32::fact(
            Layout::Pixels.with_chw(shape, [c, oh, ow])
        )))
    }

    as_op!();
}

/// Below this many depthwise convolutions faster on pixels, a model stays on planes: see
/// [`pixels_between_convolutions`].
const FEW_DEPTHWISE: usize = 4;

/// Lays out pixel by pixel images between our convolutions, where every op that writes or
/// reads them can take that layout: our 1 × 1 and depthwise convolutions, and element-wise
/// binary ops between two images (MobileNets' residual adds). The images that ops must see in
/// one layout (a depthwise convolution's input and output, a binary op's inputs and output)
/// form sets, and a set changes as one: where its depthwise convolutions run faster on pixels
/// (see [`PlaneDepthwise::faster_on_pixels`]), and where the 1 × 1 convolutions that write it
/// read pixels. Those write and read pixels in one product as they do planes, and over pixels
/// the depthwise sums run across channels, full vectors whatever a row's length. Nothing
/// changes unless [`FEW_DEPTHWISE`] depthwise convolutions or more would.
fn pixels_between_convolutions(model: &mut TypedModel) -> TractResult<()> {
    let n = model.nodes().len();
    // Union-find over nodes' first outputs: `set[i]` leads towards i's set's root.
    let mut set: Vec<usize> = (0..n).collect();
    fn root(set: &mut [usize], mut i: usize) -> usize {
        while set[i] != i {
            set[i] = set[set[i]];
            i = set[i];
        }
        i
    }
    let image = |model: &TypedModel, outlet: OutletId| {
        let fact = model.outlet_fact(outlet).ok()?;
        let shape = fact.shape.as_concrete()?.to_vec();
        (outlet.slot == 0 && shape.len() == 4 && fact.datum_type == f32::datum_type())
            .then_some(shape)
    };
    // What each node is to the pass: a writer of images it can lay out either way.
    let writes = |model: &TypedModel, id: usize| -> bool {
        let node = model.node(id);
        let Some(shape) = image(model, OutletId::new(id, 0)) else {
            return false;
        };
        if node.op_is::<Pointwise>() {
            return node
                .inputs
                .get(1)
                .is_some_and(|&f| model.outlet_fact(f).is_ok_and(|f| f.konst.is_some()));
        }
        if node.op_is::<PlaneDepthwise>() {
            return model
                .outlet_fact(node.inputs[1])
                .is_ok_and(|f| f.konst.is_some());
        }
        node.op_is::<TypedBinOp>()
            && node.inputs.len() == 2
            && node
                .inputs
                .iter()
                .all(|&i| image(model, i).as_ref() == Some(&shape))
    };
    let joined: Vec<bool> = (0..n).map(|id| writes(model, id)).collect();
    // The images an op reads that must be in the layout it writes: a depthwise convolution's
    // input, a binary op's two. (A 1 × 1 convolution reads and writes either.)
    let images_in = |model: &TypedModel, id: usize| -> TVec<OutletId> {
        let node = model.node(id);
        if !joined[id] || node.op_is::<Pointwise>() {
            tvec![]
        } else if node.op_is::<PlaneDepthwise>() {
            tvec![node.inputs[0]]
        } else {
            node.inputs.iter().copied().collect()
        }
    };
    for id in 0..n {
        for input in images_in(model, id) {
            let (a, b) = (root(&mut set, id), root(&mut set, input.node));
            set[a] = b;
        }
    }
    // A set changes if each image in it is written by one of those ops, is not a model output,
    // and is read only by a 1 × 1 convolution, or by an op that needs it in the layout it
    // writes (and so is in the set).
    let roots: Vec<usize> = (0..n).map(|id| root(&mut set, id)).collect();
    let mut ok = vec![true; n];
    // Whether all of a set's depthwise convolutions run faster on pixels, if it has any.
    let mut faster: Vec<Option<bool>> = vec![None; n];
    for (id, &r) in roots.iter().enumerate() {
        let node = model.node(id);
        let readers = node.outputs.first().map_or(&[][..], |o| &o.successors[..]);
        let read_well = readers.iter().all(|reader| {
            model.node(reader.node).op_is::<Pointwise>() && reader.slot == 0
                || images_in(model, reader.node).contains(&OutletId::new(id, 0))
        });
        let writes_well = joined[id] && !model.outputs.contains(&OutletId::new(id, 0));
        // Other nodes in a set are those whose output a member reads as an image.
        if !(writes_well && read_well) {
            ok[r] = false;
        }
        if let Some(op) = node.op_as::<PlaneDepthwise>().filter(|_| joined[id]) {
            faster[r] = Some(faster[r].unwrap_or(true) && op.faster_on_pixels());
        }
    }
    // Sets whose depthwise convolutions all run faster on pixels change. So do those without
    // any whose 1 × 1 convolutions all read changed images: from pixels to pixels, products
    // run as fast as from planes to planes, where from planes to pixels they run slower.
    let mut changes: Vec<bool> = (0..n).map(|r| ok[r] && faster[r] == Some(true)).collect();
    // Where few depthwise convolutions would change, the products into and out of pixels at
    // each run's ends cost more than they gain: CenterNet's two, on two threads, 17.3 → 18.2 ms
    // p50 (one thread, no slower). SSDLite has fourteen.
    let changing =
        (0..n).filter(|&id| changes[roots[id]] && model.node(id).op_is::<PlaneDepthwise>());
    if changing.count() < FEW_DEPTHWISE {
        return Ok(());
    }
    loop {
        let mut from_pixels = ok.clone();
        for id in (0..n).filter(|&id| joined[id] && model.node(id).op_is::<Pointwise>()) {
            let input = model.node(id).inputs[0].node;
            from_pixels[roots[id]] &= joined[input] && changes[roots[input]];
        }
        let more: Vec<usize> = (0..n)
            .filter(|&r| from_pixels[r] && faster[r].is_none() && !changes[r])
            .collect();
        if more.is_empty() {
            break;
        }
        for r in more {
            changes[r] = true;
        }
    }
    let change: Vec<bool> = (0..n).map(|id| joined[id] && changes[roots[id]]).collect();
    for id in (0..n).filter(|&id| change[id]) {
        let name = model.node(id).name.clone();
        if let Some(op) = model.node(id).op_as::<Pointwise>().cloned() {
            // The product writes pixels with the filters channel-in major, [C, M].
            transpose_filters(model, id, format!("{name}.channels-in-major"))?;
            let op = Pointwise {
                output: Layout::Pixels,
                ..op
            };
            model.node_mut(id).op = Box::new(op);
        } else if let Some(op) = model.node(id).op_as::<PlaneDepthwise>().cloned() {
            // [C, 1, kh, kw] → [kh · kw, C].
            transpose_filters(model, id, format!("{name}.taps"))?;
            let op = PixelDepthwise {
                window: op.window,
                activation: op.activation,
            };
            model.node_mut(id).op = Box::new(op);
        }
    }
    // The 1 × 1 convolutions reading a changed image read pixels.
    for id in 0..n {
        let Some(op) = model.node(id).op_as::<Pointwise>().cloned() else {
            continue;
        };
        if change[model.node(id).inputs[0].node] {
            let op = Pointwise {
                input: Layout::Pixels,
                ..op
            };
            model.node_mut(id).op = Box::new(op);
        }
    }
    if change.contains(&true) {
        model.refresh_output_facts()?;
    }
    Ok(())
}

/// Gives node `id` its filters (its input 1, a constant) transposed, as a new constant `name`:
/// `[M, …]`, a row of `C · kh · kw` weights per output channel, becomes `[C · kh · kw, M]`.
fn transpose_filters(model: &mut TypedModel, id: usize, name: String) -> TractResult<()> {
    let filters = model.outlet_fact(model.node(id).inputs[1])?.konst.clone();
    let filters = filters.context("filters not known at load")?.into_tensor();
    let shape = [filters.shape()[0], filters.len() / filters.shape()[0]];
    let filters = filters.into_shape(&shape)?.permute_axes(&[1, 0])?;
    let filters = model.add_const(name, filters)?;
    model.add_edge(filters, InletId::new(id, 1))
}

/// The most input channels [`Patches`] takes: an image's colours.
const FEW_INPUTS: usize = 4;

/// The patches a convolution of few input channels (an image's first) reads, as an image of
/// `C · kh · kw` channels (im2col), so that a [`Pointwise`] product makes the convolution, its
/// activation folded in. Each input plane is dealt as the sliding window deals it, so that a
/// patch's row is one copy. SSDLite's first convolution, 3 to 32 channels of 150 × 150, and
/// its ReLU6 took tract 0.86–0.88 ms on one thread; the patches 0.17 and the product 0.36.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Patches {
    channels: usize,
    window: Window,
}

impl Patches {
    /// The ops for `conv` with inputs of `facts` (image, filters, bias), if it is a convolution
    /// of few input channels and one group, and its filters are known: the patches, their
    /// product, and the filters for it.
    fn for_conv(conv: &Conv, facts: &[&TypedFact]) -> Option<(Self, Pointwise, Tensor)> {
        let ([channels, height, width], [kh, kw]) = plain_conv(conv, facts)?;
        let fits = conv.group == 1 && channels <= FEW_INPUTS && [kh, kw] != [1, 1];
        if !fits {
            return None;
        }
        let window = Window::of(&conv.pool_spec, [height, width])?;
        let outputs = conv.pool_spec.output_channels;
        let depth = channels * kh * kw;
        let filters = facts[1].konst.clone()?.into_tensor();
        let filters = filters.into_shape(&[outputs, depth, 1, 1]).ok()?;
        let product = Pointwise {
            input_channels: depth,
            output_channels: outputs,
            pixels: window.output[0] * window.output[1],
            activation: Activation::Identity,
            input: Layout::Planes,
            output: Layout::Planes,
        };
        Some((Self { channels, window }, product, filters))
    }

    /// Replaces node `id`, the convolution `ops` came from, with the patches and their product.
    fn swap_in(
        model: &mut TypedModel,
        id: usize,
        (patches, product, filters): (Self, Pointwise, Tensor),
    ) -> TractResult<()> {
        let node = model.node(id);
        let mut patch = TypedModelPatch::default();
        let image = patch.tap_model(model, node.inputs[0])?;
        let bias = patch.tap_model(model, node.inputs[2])?;
        let filters = patch.add_const(format!("{}.filters", node.name), filters)?;
        let x = patch.wire_node(format!("{}.patches", node.name), patches, &[image])?[0];
        let name = format!("{}.product", node.name);
        let y = patch.wire_node(name, product, &[x, filters, bias])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)
    }
}

named_op!(Patches);

impl EvalOp for Patches {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let image = args_1!(inputs);
        let shape = image.shape();
        let Some([c, h, w]) = Layout::Planes.chw(shape) else {
            bail!("patches of a {shape:?} image");
        };
        ensure!(
            [c, h, w] == [self.channels, self.window.input[0], self.window.input[1]],
            "image of {c} channels of {h}×{w}, planned for {} of {:?}",
            self.channels,
            self.window.input
        );
        let [oh, ow] = self.window.output;
        let [kh, kw] = self.window.kernel;
        let image = image.try_as_plain_ram()?.as_slice::<f32>()?;
        let out_shape = Layout::Planes.with_chw(shape, [c * kh * kw, oh, ow]);
        // SAFETY: every f32 is valid, and every output row is written.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut out = output.try_as_plain_ram_mut()?;
        let out = out.as_slice_mut::<f32>()?;
        // Each input plane padded and dealt as the sliding window has it, where each tap's
        // values for an output row lie side by side: a patch row is one copy.
        let padded = self.window.padded();
        let step = self.window.strides[0] * self.window.strides[1] * padded.run;
        let per_plane = kh * kw * oh * ow;
        par_chunks_mut(out, per_plane, out.len(), |first, chunk| {
            let mut scratch = vec![0.0; padded.len];
            for (i, taps) in chunk.chunks_exact_mut(per_plane).enumerate() {
                let plane = &image[(first + i) * h * w..][..h * w];
                self.window.deal(plane, &mut scratch, padded.run);
                for (tap, &offset) in taps.chunks_exact_mut(oh * ow).zip(&padded.offsets) {
                    for (oy, row) in tap.chunks_exact_mut(ow).enumerate() {
                        row.copy_from_slice(&scratch[oy * step + offset..][..ow]);
                    }
                }
            }
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Patches {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let [kh, kw] = self.window.kernel;
        let [oh, ow] = self.window.output;
        let image = [self.channels * kh * kw, oh, ow].map(TDim::from);
        Ok(tvec!(f32::fact(
            Layout::Planes.with_chw(&inputs[0].shape, image)
        )))
    }

    as_op!();
}

/// A max pool over f32 images laid out channel by channel (NCHW, or CHW without the batch
/// axis), without the indices output. tract's took 2.3 ms for CenterNet's one 3 × 3 pool over
/// its 80 × 128 × 128 heat map; this, 0.6.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PlaneMaxPool(Window);

impl PlaneMaxPool {
    /// The op for `pool` with an input of `fact`, if it is a pool this op covers.
    fn for_pool(pool: &MaxPool, fact: &TypedFact) -> Option<Self> {
        let spec = &pool.pool_spec;
        let [_, height, width] = channel_major(fact, spec.data_format)?;
        pool.with_index_outputs
            .is_none()
            .then(|| Window::of(spec, [height, width]))
            .flatten()
            .map(Self)
    }
}

named_op!(PlaneMaxPool);

impl EvalOp for PlaneMaxPool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let image = args_1!(inputs);
        Ok(tvec!(self.0.slide(&image, |_| Largest)?.into_tvalue()))
    }
}

impl TypedOp for PlaneMaxPool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.0.output_shape(&inputs[0].shape))))
    }

    as_op!();
}

/// How one of our ops lays out an f32 image: the last three axes of its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    /// Channel by channel, as ONNX has it: `[…, C, H, W]`.
    Planes,
    /// Pixel by pixel, a pixel's channels side by side: `[…, H, W, C]`. Only between our ops.
    Pixels,
}

impl Layout {
    /// The channels, height and width of an image of `shape`, if it has three axes or more.
    fn chw<D: Clone>(self, shape: &[D]) -> Option<[D; 3]> {
        let [a, b, c] = &shape[shape.len().checked_sub(3)?..] else {
            return None;
        };
        let [a, b, c] = [a.clone(), b.clone(), c.clone()];
        Some(match self {
            Self::Planes => [a, b, c],
            Self::Pixels => [c, a, b],
        })
    }

    /// `shape` with its image axes those of `[channels, height, width]` in this layout.
    fn with_chw<D: Clone>(self, shape: &[D], [c, h, w]: [D; 3]) -> TVec<D> {
        let mut shape: TVec<D> = shape.into();
        let rank = shape.len();
        let image = match self {
            Self::Planes => [c, h, w],
            Self::Pixels => [h, w, c],
        };
        shape[rank - 3..].clone_from_slice(&image);
        shape
    }

    /// The strides, between columns and between rows, of an image of `channels` × `pixels`
    /// seen as a matrix of a row per channel.
    fn matrix_strides(self, channels: usize, pixels: usize) -> [isize; 2] {
        match self {
            Self::Planes => [1, pixels as isize],
            Self::Pixels => [channels as isize, 1],
        }
    }
}

/// A 1 × 1 convolution with stride 1 and no padding over f32 images (NCHW, or CHW without the
/// batch axis; or laid out pixel by pixel, where [`pixels_between_convolutions`] put them): for
/// each image, one matrix product of the filters `[M, C]` and the image `[C, H × W]`, then the
/// bias and activation in one pass. The product is the `gemm` crate's, which runs these in
/// about half the time of tract's packed kernels here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Pointwise {
    input_channels: usize,
    output_channels: usize,
    pixels: usize,
    activation: Activation,
    input: Layout,
    output: Layout,
}

impl Pointwise {
    /// The op for `conv` with inputs of `facts` (image, filters, bias), if it is a 1 × 1
    /// convolution this op covers.
    fn for_conv(conv: &Conv, facts: &[&TypedFact]) -> Option<Self> {
        let spec = &conv.pool_spec;
        let ([channels, height, width], kernel) = plain_conv(conv, facts)?;
        let unpadded = spec
            .computed_padding(&[height, width])
            .iter()
            .all(|p| p.pad_before == 0 && p.pad_after == 0);
        let pointwise = conv.group == 1
            && kernel == [1, 1]
            && spec.strides().iter().all(|&s| s == 1)
            && unpadded;
        pointwise.then_some(Self {
            input_channels: channels,
            output_channels: spec.output_channels,
            pixels: height * width,
            activation: Activation::Identity,
            input: Layout::Planes,
            output: Layout::Planes,
        })
    }
}

named_op!(Pointwise);

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, filters, bias) = args_3!(inputs);
        let shape = image.shape();
        let (m, n) = (self.output_channels, self.pixels);
        let Some([k, h, w]) = self.input.chw(shape) else {
            bail!("1 × 1 convolution of a {shape:?} image");
        };
        ensure!(
            k == self.input_channels && h * w == n,
            "image of {k} channels of {h}×{w}, planned for {} of {n} pixels",
            self.input_channels
        );
        let out_shape = self.output.with_chw(shape, [m, h, w]);
        let image = image.try_as_plain_ram()?.as_slice::<f32>()?;
        let filters = filters.try_as_plain_ram()?.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: every f32 is valid, and every output is written (the product, then its bias
        // is added).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        let mut out = output.try_as_plain_ram_mut()?;
        let out = out.as_slice_mut::<f32>()?;
        let [image_cs, image_rs] = self.input.matrix_strides(k, n);
        let [out_cs, out_rs] = self.output.matrix_strides(m, n);
        // Filters [M, C] for planes out; for pixels out, [C, M] (see
        // `pixels_between_convolutions`): the gemm crate packs them faster so.
        let [filters_cs, filters_rs] = self.output.matrix_strides(m, k);
        let mut products = |parallelism| {
            for (image, out) in image.chunks_exact(k * n).zip(out.chunks_exact_mut(m * n)) {
                // SAFETY: `out` holds m × n values, `filters` m × k row after row and `image`
                // k × n, where the strides given say.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        out_cs,
                        out_rs,
                        false,
                        filters.as_ptr(),
                        filters_cs,
                        filters_rs,
                        image.as_ptr(),
                        image_cs,
                        image_rs,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    )
                }
            }
        };
        // On the threads tract was given for this run.
        match tract_pool() {
            Some(pool) => pool.install(|| products(Parallelism::Rayon(0))),
            None => products(Parallelism::None),
        }
        // Then the bias and the activation, in one pass, on tract's threads: a channel's
        // values at a time, or a pixel's.
        let activation = self.activation;
        match self.output {
            Layout::Planes => par_chunks_mut(out, n, out.len(), |first, rows| {
                for (i, row) in rows.chunks_exact_mut(n).enumerate() {
                    let channel = (first + i) % m;
                    let bias = bias[channel % bias.len()];
                    activation.apply_avx2_if_any(row, iter::repeat(bias));
                }
                Ok(())
            }),
            Layout::Pixels => par_chunks_mut(out, m, out.len(), |_, pixels| {
                for pixel in pixels.chunks_exact_mut(m) {
                    match *bias {
                        [bias] => activation.apply_avx2_if_any(pixel, iter::repeat(bias)),
                        _ => activation.apply_avx2_if_any(pixel, bias.iter().copied()),
                    }
                }
                Ok(())
            }),
        }?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let Some([_, h, w]) = self.input.chw(shape) else {
            bail!("1 × 1 convolution of a {shape:?} image");
        };
        let image = [self.output_channels.into(), h, w];
        Ok(tvec!(f32::fact(self.output.with_chw(shape, image))))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::multithread::multithread_tract_scope;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// Runs one TopK node, tract's own or ours, on `input`.
    fn run(op: Box<dyn TypedOp>, input: &Tensor, k: i64) -> TVec<TValue> {
        let inputs = tvec!(input.clone().into_tvalue(), tensor1(&[k]).into_tvalue());
        op.eval_out_of_plan(inputs).unwrap().unwrap()
    }

    fn topk(axis: usize, largest: bool) -> Topk {
        Topk {
            axis,
            largest,
            fallback_k: 0.into(),
        }
    }

    #[test]
    fn answers_as_tract_does_ties_and_all() {
        // Few distinct values, so most of the axis ties, below and above zero; three axes, so
        // the axis is strided but for the last.
        let data: Vec<f32> = (0..4 * 50 * 3)
            .map(|i| ((i * 37) % 11) as f32 - 4.5)
            .collect();
        let input = Tensor::from_shape(&[4, 50, 3], &data).unwrap();
        for largest in [true, false] {
            for axis in 0..3 {
                let n = input.shape()[axis] as i64;
                for k in [0, 1, 2, n / 2, n] {
                    let ours = run(Box::new(SelectTopk(topk(axis, largest))), &input, k);
                    let theirs = run(Box::new(topk(axis, largest)), &input, k);
                    assert_eq!(ours, theirs, "axis {axis}, k {k}, largest {largest}");
                }
            }
        }
    }

    #[test]
    fn resizes_as_tract_does_every_mode_up_and_down() {
        use tract_onnx::tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};
        let data: Vec<f32> = (0..2 * 3 * 7 * 5)
            .map(|i| ((i * 7919) % 97) as f32 / 9.0 - 4.0)
            .collect();
        let input = Tensor::from_shape(&[2, 3, 7, 5], &data).unwrap();
        let coords = [
            CoordTransformer::HalfPixel,
            CoordTransformer::AlignCorners,
            CoordTransformer::Asymmetric,
            CoordTransformer::PytorchHalfPixel,
            CoordTransformer::HalfPixelSymmetric,
            CoordTransformer::TfHalfPixelForNn,
        ];
        let kinds = [
            Interpolator::Linear,
            Interpolator::Nearest,
            Interpolator::Cubic,
        ];
        // Up, down, uneven, a leading axis too, and each of the last two alone.
        let scale_sets: [[f32; 4]; 5] = [
            [1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 0.5, 0.6],
            [1.0, 2.0, 1.5, 3.0],
            [1.0, 1.0, 1.0, 2.5],
            [1.0, 1.0, 3.0, 1.0],
        ];
        for coord in &coords {
            for kind in &kinds {
                for scales in &scale_sets {
                    let resize = Resize {
                        coord_transformer: coord.clone(),
                        interpolator: kind.clone(),
                        nearest: Nearest::RoundPreferCeil,
                        optional_scales_input: Some(1),
                        optional_sizes_input: None,
                    };
                    let inputs =
                        || tvec!(input.clone().into_tvalue(), tensor1(scales).into_tvalue());
                    let theirs = resize.eval_out_of_plan(inputs()).unwrap().unwrap();
                    let ours = RowResize(resize.clone())
                        .eval_out_of_plan(inputs())
                        .unwrap()
                        .unwrap();
                    assert_eq!(ours, theirs, "{coord:?} {kind:?} {scales:?}");
                }
            }
        }
    }

    /// One convolution over `[batch, C, height, width]` images, with filters and a bias (one
    /// per output channel) of noise.
    fn conv_model(batch: usize, group: usize, hw: [usize; 2], spec: PoolSpec) -> TypedModel {
        let mut model = TypedModel::default();
        let image = model
            .add_source(
                "image",
                f32::fact([batch, spec.input_channels, hw[0], hw[1]]),
            )
            .unwrap();
        let out = wire_conv(&mut model, "conv", image, group, spec);
        model.select_output_outlets(&[out]).unwrap();
        model
    }

    /// Wires into `model` a convolution `name` of `input`, with filters and a bias (one per
    /// output channel) of noise.
    fn wire_conv(
        model: &mut TypedModel,
        name: &str,
        input: OutletId,
        group: usize,
        spec: PoolSpec,
    ) -> OutletId {
        let [kh, kw] = [spec.kernel_shape[0], spec.kernel_shape[1]];
        let (c_in, c_out) = (spec.input_channels, spec.output_channels);
        let filter_shape = [c_out, c_in / group, kh, kw];
        let seed = model.nodes().len() as u64;
        // Scaled to the taps each output sums, so that outputs stay near ±2 layer after layer.
        let scale = ((c_in / group * kh * kw) as f32).sqrt().recip();
        let filters: Vec<f32> = noise(filter_shape.iter().product(), seed)
            .into_iter()
            .map(|w| w * scale)
            .collect();
        let filters = Tensor::from_shape(&filter_shape, &filters).unwrap();
        let filters = model.add_const(format!("{name}.filters"), filters).unwrap();
        let bias = tensor1(&noise(c_out, seed + 1));
        let bias = model.add_const(format!("{name}.bias"), bias).unwrap();
        let conv = Conv {
            pool_spec: spec,
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        model
            .wire_node(name, conv, &[input, filters, bias])
            .unwrap()[0]
    }

    /// Runs `model` as tract plans it, and with our convolutions swapped in; checks that our
    /// op `O` went in, and that both answer the same within rounding. `case` names the case.
    fn compare_with_tract<O: TypedOp>(model: TypedModel, case: &str) {
        let fact = model.input_fact(0).unwrap();
        let shape = fact.shape.as_concrete().unwrap().to_vec();
        let input = Tensor::from_shape(&shape, &noise(shape.iter().product(), 3)).unwrap();
        let theirs = run_model(model.clone().into_optimized().unwrap(), &input);
        let mut ours = model;
        swap_before_declutter(&mut ours).unwrap();
        assert!(
            ours.nodes().iter().any(|n| n.op_is::<O>()),
            "not swapped: {case}"
        );
        let ours = run_model(ours.into_optimized().unwrap(), &input);
        assert_eq!(ours.shape(), theirs.shape(), "{case}");
        let (ours, theirs) = (
            ours.to_plain_array_view::<f32>().unwrap(),
            theirs.to_plain_array_view::<f32>().unwrap(),
        );
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{case} at {i}: {a} against {b}"
            );
        }
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| (((i + seed * 7919) * 2654435761) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    fn run_model(model: TypedModel, input: &Tensor) -> Tensor {
        let out = model
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into()))
            .unwrap();
        out[0].clone().into_tensor()
    }

    #[test]
    fn convolves_as_tract_does_with_strides_dilations_and_padding() {
        // (channels, height × width, kernel, strides, dilations, padding before, after)
        type Case = (
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
        );
        let cases: [Case; 10] = [
            (3, [9, 11], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (2, [6, 45], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (3, [9, 75], [5, 5], [2, 2], [1, 1], [2, 2], [2, 2]),
            (4, [16, 40], [5, 5], [1, 1], [1, 1], [2, 2], [2, 2]),
            (2, [12, 13], [3, 3], [2, 2], [1, 1], [0, 0], [1, 1]),
            (5, [17, 18], [5, 5], [2, 2], [1, 1], [1, 1], [2, 2]),
            (3, [10, 21], [3, 3], [1, 3], [2, 2], [2, 1], [0, 2]),
            (2, [7, 7], [1, 1], [1, 1], [1, 1], [0, 0], [0, 0]),
            (4, [8, 33], [3, 5], [2, 1], [1, 2], [0, 3], [0, 0]),
            (2, [4, 5], [3, 3], [1, 1], [1, 1], [0, 0], [0, 0]),
        ];
        for (c, hw, kernel, strides, dilations, before, after) in cases {
            let spec = depthwise_spec(c, kernel, strides, dilations, [before, after]);
            let case = format!("{hw:?} {kernel:?} {strides:?} {dilations:?}");
            compare_with_tract::<PlaneDepthwise>(conv_model(1, c, hw, spec), &case);
        }
    }

    /// A depthwise convolution of `c` channels: its kernel, strides, dilations and padding
    /// (before, after), each per axis.
    fn depthwise_spec(
        c: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        [before, after]: [[usize; 2]; 2],
    ) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: kernel[..].into(),
            padding: PaddingSpec::Explicit(before[..].into(), after[..].into()),
            dilations: Some(dilations[..].into()),
            strides: Some(strides[..].into()),
            input_channels: c,
            output_channels: c,
        }
    }

    /// MobileNet's blocks, five: each a 1 × 1 convolution to `c` channels, a depthwise one (of
    /// `spec` in the first block, 3 × 3 keeping the size in the others), and a 1 × 1 one to 8
    /// channels. The first reads the 5-channel image; each other adds its output to its input
    /// (`add1` to `add4`). Last, a 1 × 1 convolution to 6 channels, the model's output.
    fn blocks_model(hw: [usize; 2], spec: &PoolSpec) -> TypedModel {
        let c = spec.input_channels;
        let mut model = TypedModel::default();
        let image = model
            .add_source("image", f32::fact([1, 5, hw[0], hw[1]]))
            .unwrap();
        let block = |model: &mut TypedModel, name: &str, x: OutletId, c_in: usize, spec| {
            let expand = pointwise_spec(c_in, c);
            let x = wire_conv(model, &format!("{name}.expand"), x, 1, expand);
            let x = wire_conv(model, &format!("{name}.depthwise"), x, c, spec);
            wire_conv(
                model,
                &format!("{name}.project"),
                x,
                1,
                pointwise_spec(c, 8),
            )
        };
        let mut x = block(&mut model, "block0", image, 5, spec.clone());
        let same = depthwise_spec(c, [3, 3], [1, 1], [1, 1], [[1, 1], [1, 1]]);
        for i in 1..5 {
            let y = block(&mut model, &format!("block{i}"), x, 8, same.clone());
            let add = tract_onnx::tract_core::ops::math::add();
            x = model.wire_node(format!("add{i}"), add, &[x, y]).unwrap()[0];
        }
        let out = wire_conv(&mut model, "out", x, 1, pointwise_spec(8, 6));
        model.select_output_outlets(&[out]).unwrap();
        model
    }

    #[test]
    fn convolves_on_pixels_as_tract_does() {
        // (channels, height × width, kernel, strides, dilations, padding before, after):
        // channels of one 64 block and then one of 8, or of 32 and then 8 again in part, or
        // several of each; padded or not, strided, dilated.
        type Case = (
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [[usize; 2]; 2],
        );
        let cases: [Case; 5] = [
            (72, [19, 19], [3, 3], [1, 1], [1, 1], [[1, 1], [1, 1]]),
            (99, [10, 12], [3, 3], [2, 2], [1, 1], [[0, 0], [1, 1]]),
            (200, [9, 11], [5, 5], [2, 1], [1, 1], [[2, 2], [2, 2]]),
            (67, [12, 13], [3, 5], [1, 1], [2, 2], [[2, 1], [0, 3]]),
            (64, [5, 6], [3, 3], [1, 1], [1, 1], [[0, 0], [0, 0]]),
        ];
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            multithread_tract_scope(executor, || {
                for (c, hw, kernel, strides, dilations, padding) in cases {
                    let spec = depthwise_spec(c, kernel, strides, dilations, padding);
                    let case = format!("{c} of {hw:?} {kernel:?} {strides:?} {dilations:?}");
                    let model = blocks_model(hw, &spec);
                    let mut ours = model.clone();
                    swap_before_declutter(&mut ours).unwrap();
                    let layouts: Vec<_> = ours
                        .eval_order()
                        .unwrap()
                        .into_iter()
                        .filter_map(|id| ours.node(id).op_as::<Pointwise>())
                        .map(|op| (op.input, op.output))
                        .collect();
                    // Pixels from the first product to the last, which writes the model's
                    // output as planes.
                    use Layout::{Pixels, Planes};
                    let mut expected = vec![(Planes, Pixels)];
                    expected.extend([(Pixels, Pixels); 9]);
                    expected.push((Pixels, Planes));
                    assert_eq!(layouts, expected, "{case}");
                    compare_with_tract::<PixelDepthwise>(model, &case);
                }
            });
        }
    }

    #[test]
    fn keeps_planes_where_pixels_would_be_slower_or_not_fit() {
        let spec = |c| depthwise_spec(c, [3, 3], [1, 1], [1, 1], [[1, 1], [1, 1]]);
        // (case, height × width, depthwise, a node whose output is the model's too, how many
        // depthwise convolutions run on pixels)
        let cases: [(&str, _, _, &[&str], _); 5] = [
            ("few channels", [19, 19], spec(16), &[], 0),
            ("long rows", [40, 40], spec(64), &[], 0),
            (
                "a depthwise input an output",
                [19, 19],
                spec(64),
                &["block0.expand"],
                4,
            ),
            (
                "the blocks' sum an output",
                [19, 19],
                spec(64),
                &["add1"],
                5,
            ),
            (
                "two depthwise inputs outputs: three left, too few",
                [19, 19],
                spec(64),
                &["block0.expand", "block1.expand"],
                0,
            ),
        ];
        for (case, hw, spec, also_out, on_pixels) in cases {
            let mut model = blocks_model(hw, &spec);
            let mut outputs = model.output_outlets().unwrap().to_vec();
            for name in also_out {
                outputs.push(OutletId::new(model.node_by_name(name).unwrap().id, 0));
            }
            model.select_output_outlets(&outputs).unwrap();
            let mut ours = model.clone();
            swap_before_declutter(&mut ours).unwrap();
            let order = ours.eval_order().unwrap();
            let pixels = order
                .iter()
                .filter(|&&id| ours.node(id).op_is::<PixelDepthwise>());
            assert_eq!(pixels.count(), on_pixels, "{case}");
            // Each output as planes, as tract has it.
            for (i, &output) in ours.output_outlets().unwrap().iter().enumerate() {
                let fact = ours.outlet_fact(output).unwrap();
                let theirs = model
                    .outlet_fact(model.output_outlets().unwrap()[i])
                    .unwrap();
                assert_eq!(fact.shape, theirs.shape, "{case}");
            }
            compare_with_tract::<Pointwise>(model, case);
        }
    }

    /// A 1 × 1 convolution with stride 1 and no padding, `c_in` channels to `c_out`.
    fn pointwise_spec(c_in: usize, c_out: usize) -> PoolSpec {
        PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![1, 1],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: c_in,
            output_channels: c_out,
        }
    }

    #[test]
    fn multiplies_as_tract_does_for_any_channels_and_size() {
        // (images, channels in, channels out, height × width): sizes of CenterNet's layers,
        // a squeeze-and-excite block's one pixel, a batch of two, sizes of no round number, and
        // images of several column blocks, the last one short.
        let cases = [
            (1, 128, 80, [16, 16]),
            (1, 16, 64, [32, 32]),
            (1, 720, 120, [1, 1]),
            (2, 5, 3, [7, 9]),
            (1, 3, 33, [13, 17]),
            (1, 24, 72, [40, 41]),
            (2, 8, 300, [20, 30]),
        ];
        // On one thread, and on two sharing the blocks.
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            multithread_tract_scope(executor, || {
                for (batch, c_in, c_out, hw) in cases {
                    let model = conv_model(batch, 1, hw, pointwise_spec(c_in, c_out));
                    let case = format!("{batch} × {c_in} → {c_out} of {hw:?}");
                    compare_with_tract::<Pointwise>(model, &case);
                }
            });
        }
    }

    #[test]
    fn leaves_other_convolutions_to_tract() {
        let strided = PoolSpec {
            strides: Some(tvec![2, 2]),
            ..pointwise_spec(4, 6)
        };
        let padded = PoolSpec {
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            ..pointwise_spec(4, 6)
        };
        // 3 × 3 over more channels than an image's colours.
        let three = PoolSpec {
            kernel_shape: tvec![3, 3],
            ..pointwise_spec(FEW_INPUTS + 1, 6)
        };
        let grouped = conv_model(1, 2, [8, 8], pointwise_spec(4, 6));
        let grouped_patches = conv_model(
            1,
            2,
            [8, 8],
            PoolSpec {
                kernel_shape: tvec![3, 3],
                ..pointwise_spec(4, 6)
            },
        );
        for model in [
            conv_model(1, 1, [8, 8], strided),
            conv_model(1, 1, [8, 8], padded),
            conv_model(1, 1, [8, 8], three),
            grouped,
            grouped_patches,
        ] {
            let mut swapped = model.clone();
            swap_before_declutter(&mut swapped).unwrap();
            let order = swapped.eval_order().unwrap();
            let ops: Vec<_> = order
                .iter()
                .map(|&id| swapped.node(id).op().name())
                .collect();
            assert!(ops.iter().any(|op| op == "Conv"), "{ops:?}");
        }
    }

    #[test]
    fn takes_an_images_patches_as_tract_does() {
        // (channels in, out, height × width, kernel, strides, dilations, padding before, after)
        type Case = (
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [[usize; 2]; 2],
        );
        let cases: [Case; 5] = [
            // SSDLite's first: 3 × 3, stride 2, padded after only.
            (3, 32, [30, 30], [3, 3], [2, 2], [1, 1], [[0, 0], [1, 1]]),
            (3, 16, [17, 20], [3, 3], [2, 2], [1, 1], [[1, 1], [1, 1]]),
            (1, 5, [9, 11], [5, 5], [1, 1], [1, 1], [[2, 2], [2, 2]]),
            (4, 7, [12, 13], [3, 5], [1, 3], [2, 1], [[2, 0], [1, 4]]),
            (2, 3, [7, 8], [2, 2], [1, 1], [1, 1], [[0, 0], [0, 0]]),
        ];
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            multithread_tract_scope(executor, || {
                for (c_in, c_out, hw, kernel, strides, dilations, padding) in cases {
                    let spec = PoolSpec {
                        output_channels: c_out,
                        ..depthwise_spec(c_in, kernel, strides, dilations, padding)
                    };
                    let case =
                        format!("{c_in} → {c_out} of {hw:?} {kernel:?} {strides:?} {dilations:?}");
                    compare_with_tract::<Patches>(conv_model(1, 1, hw, spec), &case);
                }
            });
        }
    }

    #[test]
    fn pools_as_tract_does_with_strides_dilations_and_padding() {
        // (batch, channels, height × width, kernel, strides, dilations, padding)
        type Case = (
            usize,
            usize,
            [usize; 2],
            [usize; 2],
            [usize; 2],
            [usize; 2],
            PaddingSpec,
        );
        let explicit = |before: [usize; 2], after: [usize; 2]| {
            PaddingSpec::Explicit(before.into_iter().collect(), after.into_iter().collect())
        };
        let cases: [Case; 6] = [
            // CenterNet's: the peaks of its heat map.
            (
                1,
                80,
                [16, 40],
                [3, 3],
                [1, 1],
                [1, 1],
                PaddingSpec::SameUpper,
            ),
            (1, 3, [9, 11], [2, 2], [2, 2], [1, 1], PaddingSpec::Valid),
            (
                2,
                2,
                [13, 37],
                [3, 3],
                [2, 2],
                [1, 1],
                explicit([1, 0], [1, 1]),
            ),
            (
                1,
                4,
                [10, 21],
                [3, 2],
                [1, 3],
                [2, 1],
                explicit([2, 1], [0, 2]),
            ),
            (
                1,
                2,
                [7, 45],
                [5, 5],
                [1, 1],
                [1, 1],
                PaddingSpec::SameLower,
            ),
            (1, 1, [4, 5], [1, 1], [1, 1], [1, 1], PaddingSpec::Valid),
        ];
        for (batch, c, hw, kernel, strides, dilations, padding) in cases {
            let case = format!("{hw:?} {kernel:?} {strides:?} {dilations:?} {padding:?}");
            let pool = MaxPool {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: kernel.into_iter().collect(),
                    padding,
                    dilations: Some(dilations.into_iter().collect()),
                    strides: Some(strides.into_iter().collect()),
                    input_channels: c,
                    output_channels: c,
                },
                with_index_outputs: None,
            };
            let mut model = TypedModel::default();
            let image = model
                .add_source("image", f32::fact([batch, c, hw[0], hw[1]]))
                .unwrap();
            let out = model.wire_node("pool", pool, &[image]).unwrap();
            model.select_output_outlets(&out).unwrap();
            compare_with_tract::<PlaneMaxPool>(model, &case);
        }
    }

    #[test]
    fn moves_axes_as_tract_does() {
        let shape = [2usize, 3, 17, 5];
        let data: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|i| i as f32)
            .collect();
        let input = Tensor::from_shape(&shape, &data).unwrap();
        // CenterNet's: an NHWC input to NCHW, and a heat map's channels last; large enough to
        // be shared by two threads.
        let nhwc = Tensor::from_shape(&[1, 100, 121, 3], &noise(100 * 121 * 3, 4)).unwrap();
        let nchw = Tensor::from_shape(&[1, 80, 24, 25], &noise(80 * 24 * 25, 5)).unwrap();
        let cases: Vec<_> = (0..4)
            .flat_map(|from| (0..4).map(move |to| (from, to)))
            .map(|(from, to)| (input.clone(), from, to))
            .chain([(nhwc, 3, 1), (nchw, 1, 3)])
            .collect();
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            multithread_tract_scope(executor, || {
                for (input, from, to) in &cases {
                    let (from, to) = (*from, *to);
                    let theirs = AxisOp::Move(from, to)
                        .eval_out_of_plan(tvec!(input.clone().into_tvalue()))
                        .unwrap();
                    let ours = TiledMoveAxis { from, to }
                        .eval_out_of_plan(tvec!(input.clone().into_tvalue()))
                        .unwrap();
                    assert_eq!(ours, theirs, "{:?} {from} → {to}", input.shape());
                }
            });
        }
    }

    #[test]
    fn drops_an_axis_move_that_undoes_the_one_before() {
        // A map moved channels last (read there too), and back: the way back is dropped.
        let mut model = TypedModel::default();
        let map = model.add_source("map", f32::fact([1, 4, 3, 5])).unwrap();
        let last = model.wire_node("last", AxisOp::Move(1, 3), &[map]).unwrap();
        let back = model.wire_node("back", AxisOp::Move(3, 1), &last).unwrap();
        let other = model.wire_node("other", AxisOp::Move(3, 2), &last).unwrap();
        model
            .select_output_outlets(&[back[0], last[0], other[0]])
            .unwrap();
        let input = Tensor::from_shape(&[1, 4, 3, 5], &noise(60, 6)).unwrap();
        let run = |model: TypedModel| {
            let moves = model
                .eval_order()
                .unwrap()
                .iter()
                .filter(|&&id| model.node(id).op_is::<TiledMoveAxis>())
                .count();
            let outputs = model
                .into_runnable()
                .unwrap()
                .run(tvec!(input.clone().into()))
                .unwrap();
            (outputs, moves)
        };
        let (theirs, _) = run(model.clone());
        swap_slow_ops(&mut model).unwrap();
        let (ours, moves) = run(model);
        assert_eq!(ours, theirs);
        assert_eq!(moves, 2, "the move back is still run");
        assert_eq!(ours[0].clone().into_tensor(), input);
    }

    #[test]
    fn folds_relu_relu6_and_hard_swish_into_the_convolution_before() {
        use tract_onnx::tract_core::ops::math::{add, max, min, mul};
        let scalar = |model: &mut TypedModel, name: &str, value: f32| {
            let value = Tensor::from_shape(&[1, 1, 1, 1], &[value]).unwrap();
            model.add_const(name, value).unwrap()
        };
        let depthwise = PoolSpec {
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            ..pointwise_spec(6, 6)
        };
        for (group, spec) in [(1, pointwise_spec(4, 6)), (6, depthwise)] {
            // (what reads the convolution, whether ours takes it in)
            for (after, folds) in [
                ("relu", true),
                ("relu6", true),
                ("hard-swish", true),
                ("relu, and out", false),
            ] {
                let mut model = conv_model(1, group, [9, 37], spec.clone());
                let x = model.output_outlets().unwrap()[0];
                let zero = scalar(&mut model, "zero", 0.0);
                let out = match after {
                    "hard-swish" => {
                        let (sixth, three) = (
                            scalar(&mut model, "sixth", 0.16662598),
                            scalar(&mut model, "three", 3.0),
                        );
                        let six = scalar(&mut model, "six", 6.0);
                        let scaled = model.wire_node("scaled", mul(), &[sixth, x]).unwrap();
                        let plus = model.wire_node("plus", add(), &[x, three]).unwrap();
                        let low = model.wire_node("low", max(), &[plus[0], zero]).unwrap();
                        let high = model.wire_node("high", min(), &[low[0], six]).unwrap();
                        model
                            .wire_node("swish", mul(), &[scaled[0], high[0]])
                            .unwrap()
                    }
                    "relu6" => {
                        let six = scalar(&mut model, "six", 6.0);
                        let relu = model.wire_node("relu", max(), &[x, zero]).unwrap();
                        model.wire_node("relu6", min(), &[relu[0], six]).unwrap()
                    }
                    _ => model.wire_node("relu", max(), &[x, zero]).unwrap(),
                };
                let outputs = if folds {
                    tvec![out[0]]
                } else {
                    tvec![out[0], x]
                };
                model.select_output_outlets(&outputs).unwrap();
                let case = format!("{after} after a group-{group} convolution");
                let mut ours = model.clone();
                swap_before_declutter(&mut ours).unwrap();
                let order = ours.eval_order().unwrap();
                let left = order
                    .iter()
                    .filter(|&&id| ours.node(id).op_is::<TypedBinOp>());
                assert_eq!(left.count() == 0, folds, "{case}");
                if !folds {
                    continue;
                }
                if group == 1 {
                    compare_with_tract::<Pointwise>(model, &case);
                } else {
                    compare_with_tract::<PlaneDepthwise>(model, &case);
                }
            }
        }
    }

    #[test]
    fn refuses_more_than_the_axis_holds() {
        let input = Tensor::from_shape(&[1, 3], &[1f32, 2., 3.]).unwrap();
        let inputs = tvec!(input.into_tvalue(), tensor1(&[4i64]).into_tvalue());
        let err = SelectTopk(topk(1, true))
            .eval_out_of_plan(inputs)
            .unwrap_err();
        assert!(err.to_string().contains("4 of an axis of 3"), "{err}");
    }
}

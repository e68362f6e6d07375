//! Faster stand-ins for two of tract's ops, swapped into a model's plan after tract has
//! optimised it. Each gives exactly tract's answer; only f32 inputs are swapped, other types
//! keep tract's op.
//!
//! - TopK: tract's sorts the whole axis to keep k of it. CenterNet's head takes the best 100 of
//!   128 × 128 × 80 scores, and that sort was a quarter of the model's time (56 of 215 ms on one
//!   core here). Keeping the best k in a heap while reading the axis once takes about 3 ms.
//! - Resize: tract resamples one axis at a time, and along the last axis (one value per output,
//!   no run of neighbours to work on together) its per-value overhead dominates: CenterNet's
//!   three upsamplings took 17 ms. The last axis gets a plain loop over tract's own resampling
//!   plan (the same taps and weights, added in the same order).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::Topk;
use tract_onnx::tract_core::ops::nn::resize::{resample_axis, AxisPlan, Resize};

/// Replaces every f32 TopK in `model` with [`SelectTopk`], and every f32 Resize with
/// [`RowResize`].
pub(crate) fn swap_slow_ops(model: &mut TypedModel) -> TractResult<()> {
    // Patching appends the new nodes: the ones there now keep their ids.
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let op: Box<dyn TypedOp> = if let Some(topk) = node.op_as::<Topk>() {
            Box::new(SelectTopk(topk.clone()))
        } else if let Some(resize) = node.op_as::<Resize>() {
            Box::new(RowResize(resize.clone()))
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
        let plain = input.try_as_plain_ram()?;
        let data = plain.as_slice::<f32>()?;
        let mut values = vec![0f32; outer * k * inner];
        let mut indices = vec![0i64; outer * k * inner];
        // A max-heap of the best k so far: its top is the worst of them, the one to beat.
        let mut best = BinaryHeap::with_capacity(k);
        for o in 0..outer {
            for i in 0..inner {
                for index in 0..n {
                    let c = Candidate {
                        value: data[(o * n + index) * inner + i],
                        index,
                        largest: self.0.largest,
                    };
                    if best.len() < k {
                        best.push(c);
                    } else if let Some(mut worst) = best.peek_mut() {
                        if c < *worst {
                            *worst = c;
                        }
                    }
                }
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

/// ONNX Resize over f32, as tract's [`Resize`] computes it, with a tight loop for the axes along
/// which values are contiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RowResize(Resize);

impl Op for RowResize {
    fn name(&self) -> StaticName {
        "RowResize".into()
    }

    op_as_typed_op!();
}

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
        let mut shape: TVec<usize> = input.shape().into();
        let mut data = input.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        for (axis, &scale) in scales.iter().enumerate() {
            let (len_in, len_out) = (shape[axis], out_shape[axis]);
            if len_in == len_out && scale == 1.0 {
                continue;
            }
            let plan = r.plan_axis(scale, len_in, len_out);
            let mut out = vec![0f32; data.len() / len_in.max(1) * len_out];
            if shape[axis + 1..].iter().product::<usize>() == 1 {
                resample_rows(&data, len_in, &plan, &mut out);
            } else {
                resample_axis(&data, &shape, axis, &plan, 0.0, &mut out);
            }
            data = out;
            shape[axis] = len_out;
        }
        Ok(tvec!(Tensor::from_shape(&shape, &data)?.into_tvalue()))
    }
}

/// Resamples each run of `len_in` contiguous values by `plan`: tract's `resample_axis` where one
/// value follows another, without its per-value overhead.
fn resample_rows(input: &[f32], len_in: usize, plan: &AxisPlan, output: &mut [f32]) {
    let len_out = plan.extrapolated.len();
    if len_in == 0 || len_out == 0 {
        return;
    }
    let taps = plan.indices.chunks_exact(plan.window);
    let weights = plan.weights.chunks_exact(plan.window);
    for (src, dst) in input
        .chunks_exact(len_in)
        .zip(output.chunks_exact_mut(len_out))
    {
        for (((d, taps), weights), &outside) in dst
            .iter_mut()
            .zip(taps.clone())
            .zip(weights.clone())
            .zip(&plan.extrapolated)
        {
            let mut sum = 0.0;
            if !outside {
                for (&i, &w) in taps.iter().zip(weights) {
                    if w != 0.0 {
                        sum += w * src[i];
                    }
                }
            }
            *d = sum;
        }
    }
}

impl TypedOp for RowResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Few distinct values, so most of the axis ties; three axes, so the axis is strided.
        let data: Vec<f32> = (0..4 * 50 * 3).map(|i| ((i * 37) % 11) as f32).collect();
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
        // Up, down, uneven, and the last axis alone (the one our loop takes).
        let scale_sets: [[f32; 4]; 4] = [
            [1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 0.5, 0.6],
            [1.0, 2.0, 1.5, 3.0],
            [1.0, 1.0, 1.0, 2.5],
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

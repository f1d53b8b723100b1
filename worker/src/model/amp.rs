//! Mixed precision and memory layout for one trial's thread.
//!
//! bf16 autocast is switched on through `csrc/amp.cpp` (tch's own `autocast` only does CUDA's
//! default float16, which needs a gradient scaler). Autocast state is per thread in libtorch,
//! so every trial (and every slot of a worker) sets its own. Weights and optimizer state stay
//! float32: autocast casts them per operation, and the casts it caches are dropped after every
//! optimiser step ([`weights_changed`]).

use std::os::raw::c_int;
use sweep_proto::Precision;
use tch::{Device, Kind, Tensor};

extern "C" {
    fn sweep_set_bf16_autocast(cuda: c_int, enabled: c_int) -> c_int;
    fn sweep_clear_autocast_cache();
}

/// Call after every change to the weights (each optimiser step). Autocast keeps its bf16
/// copies of the weights until its outermost region ends, and a trial's region is the whole
/// trial; PyTorch's `with autocast():` around each forward pass ends it every step. Without
/// this, every later forward pass used the first step's weights. A no-op when the cache is
/// empty (fp32).
pub fn weights_changed() {
    // SAFETY: a plain C call without arguments; it catches every C++ exception.
    unsafe { sweep_clear_autocast_cache() };
}

/// bf16 autocast for the lifetime of the guard, on the thread that made it.
pub struct Autocast {
    cuda: bool,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: a plain C call with integer arguments; it catches every C++ exception.
        unsafe { sweep_set_bf16_autocast(c_int::from(self.cuda), 0) };
    }
}

/// Checks that `device` computes a bf16 convolution and matrix product.
pub fn bf16_works(device: Device) -> Result<(), String> {
    let probe = || -> Result<(), tch::TchError> {
        let x = Tensor::f_ones([2, 3, 8, 8], (Kind::BFloat16, device))?;
        let w = Tensor::f_ones([4, 3, 3, 3], (Kind::BFloat16, device))?;
        let y = x.f_conv2d::<Tensor>(&w, None, [1, 1], [1, 1], [1, 1], 1)?;
        let m = y
            .f_flatten(1, -1)?
            .f_matmul(&Tensor::f_ones([256, 2], (Kind::BFloat16, device))?)?;
        m.f_to_kind(Kind::Float)?
            .f_sum(Kind::Float)?
            .f_double_value(&[])?;
        Ok(())
    };
    probe().map_err(|e| e.to_string())
}

/// Turns on the trial's precision. Returns the guard (None for fp32) and, when bf16 was asked
/// for but `probe` failed, the note that says training fell back to fp32.
pub fn enable(
    precision: Precision,
    device: Device,
    probe: impl FnOnce(Device) -> Result<(), String>,
) -> (Option<Autocast>, Option<String>) {
    if precision == Precision::Fp32 {
        return (None, None);
    }
    if let Err(e) = probe(device) {
        let first = e.lines().next().unwrap_or_default().to_string();
        return (
            None,
            Some(format!(
                "bf16 is not supported on {device:?}, trained in fp32: {first}"
            )),
        );
    }
    let cuda = matches!(device, Device::Cuda(_));
    // SAFETY: as in Drop.
    if unsafe { sweep_set_bf16_autocast(c_int::from(cuda), 1) } != 0 {
        return (
            None,
            Some("libtorch refused bf16 autocast, trained in fp32".into()),
        );
    }
    (Some(Autocast { cuda }), None)
}

/// The same values with channels-last (NHWC) strides, still shaped `[B, C, H, W]`.
pub fn channels_last(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether a 4-D tensor is laid out channels-last.
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4 && stride[1] == 1 && stride[3] == size[1] && stride[2] == size[1] * size[3]
}

/// Re-lays every 4-D weight (the convolution kernels) under `vs` as channels-last.
pub fn weights_channels_last(vs: &tch::nn::VarStore) {
    let _guard = tch::no_grad_guard();
    for mut v in vs.trainable_variables() {
        if v.dim() == 4 {
            let nhwc = channels_last(&v);
            v.set_data(&nhwc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    #[test]
    fn bf16_autocast_runs_on_cpu_and_switches_back_off() {
        let _lock = crate::test_rng_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root(), 3, 8, 3, Default::default());
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        {
            let (guard, note) = enable(Precision::Bf16, Device::Cpu, bf16_works);
            assert!(guard.is_some() && note.is_none(), "{note:?}");
            assert_eq!(x.apply(&conv).kind(), Kind::BFloat16, "autocast is on");
        }
        assert_eq!(
            x.apply(&conv).kind(),
            Kind::Float,
            "dropping the guard turns it off"
        );
        let (guard, note) = enable(Precision::Fp32, Device::Cpu, bf16_works);
        assert!(guard.is_none() && note.is_none());
    }

    #[test]
    fn unsupported_bf16_falls_back_to_fp32_with_a_note() {
        let (guard, note) = enable(Precision::Bf16, Device::Cpu, |_| {
            Err("no bf16 here\nmore".into())
        });
        assert!(guard.is_none());
        let note = note.unwrap();
        assert!(
            note.contains("fp32") && note.contains("no bf16 here") && !note.contains("more"),
            "{note}"
        );
        let x = Tensor::rand([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root(), 3, 8, 3, Default::default());
        assert_eq!(x.apply(&conv).kind(), Kind::Float);
    }

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let _lock = crate::test_rng_lock();
        let x = Tensor::rand([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let y = channels_last(&x);
        assert_eq!(y.size(), x.size());
        assert!(is_channels_last(&y) && !is_channels_last(&x));
        assert!(y.equal(&x));
        let vs = nn::VarStore::new(Device::Cpu);
        let net = crate::model::build(
            &vs.root(),
            sweep_proto::Model::Fast,
            crate::model::Io::cifar10(3),
            Default::default(),
        )
        .unwrap();
        let before = net.forward_t(&x.narrow(3, 0, 4).repeat([1, 1, 8, 8]), false);
        weights_channels_last(&vs);
        for v in vs.trainable_variables().iter().filter(|v| v.dim() == 4) {
            assert!(is_channels_last(v));
        }
        let input = channels_last(&x.narrow(3, 0, 4).repeat([1, 1, 8, 8]));
        let after = net.forward_t(&input, false);
        assert!(
            before.allclose(&after, 1e-4, 1e-4, false),
            "same function in either layout"
        );
    }
}

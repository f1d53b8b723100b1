//! Choosing the training device once, from `--device auto|cpu|cuda` and the trial's request.

use sweep_proto::DeviceRequest;
use tch::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// Resolves the worker's device, failing if CUDA was asked for but is not usable.
pub fn choose(arg: DeviceArg) -> Result<Device, String> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Auto => Ok(Device::cuda_if_available()),
        DeviceArg::Cuda if cfg!(sweep_without_cuda) => Err("--device cuda: this worker was built \
             without CUDA (the CPU image, or SWEEP_WORKER_CUDA=0); use the CUDA image or a build \
             against libtorch with libtorch_cuda.so"
            .into()),
        DeviceArg::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceArg::Cuda => {
            Err("--device cuda: libtorch sees no CUDA device (driver missing, or no GPU)".into())
        }
    }
}

/// Checks that a trial that needs a device kind can run on `device`.
pub fn check_request(request: DeviceRequest, device: Device) -> Result<(), String> {
    match (request, device) {
        (DeviceRequest::Cuda, Device::Cpu) => {
            Err("the trial sets device = \"cuda\" but this worker trains on the CPU".into())
        }
        (DeviceRequest::Cpu, Device::Cuda(_)) => Err(
            "the trial sets device = \"cpu\" but this worker trains on CUDA; pass --device cpu"
                .into(),
        ),
        _ => Ok(()),
    }
}

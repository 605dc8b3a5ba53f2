// Peak CUDA memory as PyTorch's caching allocator counts it (what torch.cuda.max_memory_allocated reports), for
// the GPU benchmark: TorchSharp does not expose these statistics. Built on the GPU machine against the libtorch
// that the benchmark runs on (see benchmarks/gpu/run.sh); only plain integers cross the C boundary.
#include <c10/cuda/CUDACachingAllocator.h>

extern "C" {

long long ldm_cuda_peak_allocated(int device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return static_cast<long long>(stats.allocated_bytes[0].peak);  // index 0: the aggregate over pool types
}

long long ldm_cuda_allocated(int device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return static_cast<long long>(stats.allocated_bytes[0].current);
}

void ldm_cuda_reset_peak(int device) {
  c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
}

}

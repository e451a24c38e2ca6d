// trainer/device.c: where a command computes (gptoss train's device.type, gptoss eval's --device).
// auto is the GPU when this build has CUDA and one is present, else the CPU; cuda without a GPU, or in
// a build without CUDA, is an error saying so (never a silent fall-back: the user asked for the GPU).
#include "trainer/trainer.h"

#if GPTOSS_HAVE_CUDA
#include "core/cuda_rt.h"
#endif

gt_status train_device_resolve(run_device want, int index, run_device *got, gt_error *err) {
    *got = RC_DEVICE_CPU;
    if (want == RC_DEVICE_CPU) return GT_OK;
#if GPTOSS_HAVE_CUDA
    int n = cuda_device_count();
    if (want == RC_DEVICE_AUTO && n == 0) return GT_OK;
    if (n == 0) return gt_fail(err, GT_EUNSUPPORTED, "no GPU found (use cpu, or auto: the GPU when there is one)");
    if (index >= n)
        return gt_fail(err, GT_EINVAL, "device index %d, but %d GPU%s visible (0..%d; CUDA_VISIBLE_DEVICES picks "
                       "which)", index, n, n == 1 ? " is" : "s are", n - 1);
    cuda_device_set(index);
    *got = RC_DEVICE_CUDA;
    return GT_OK;
#else
    (void)index;
    if (want == RC_DEVICE_AUTO) return GT_OK;
    return gt_fail(err, GT_EUNSUPPORTED, "this build has no CUDA backend (nvcc was not found when it was built; "
                   "scripts/build_gpu.sh builds one); use cpu");
#endif
}

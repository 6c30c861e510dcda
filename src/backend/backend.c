/*
 * backend.c: choosing a backend at run time (--device auto|cpu|cuda).
 *
 * Without CUDA in the build, lv_backend_cuda says so; with it, kernels/cuda.cu provides it
 * and says why when no driver or device answers. "auto" takes CUDA when it works and
 * otherwise the CPU, with one line saying why.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "backend/backend.h"

#include <string.h>

#include "util/log.h"

#ifndef HAVE_CUDA
lv_backend *lv_backend_cuda(void)
{
    lv_error("cuda: this build of lavinia has no CUDA backend (configure --with-cuda)");
    return NULL;
}
#endif

lv_backend *lv_backend_by_name(const char *name)
{
    if (!name || strcmp(name, "auto") == 0) {
        lv_backend *b = lv_backend_cuda();
        if (b)
            return b;
        lv_log(LV_LOG_WARN, "%s; using the CPU", lv_errmsg());
        return lv_backend_cpu();
    }
    if (strcmp(name, "cpu") == 0)
        return lv_backend_cpu();
    if (strcmp(name, "cuda") == 0)
        return lv_backend_cuda();
    lv_error("unknown device '%s' (auto, cpu or cuda)", name);
    return NULL;
}

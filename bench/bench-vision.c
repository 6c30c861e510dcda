/*
 * bench-vision.c: one image through a ViT-L/14-336-shaped tower and LLaVA-1.5's projector
 * (random weights), its FLOP count, and its speed as a share of OpenBLAS's sgemm measured in
 * the same run on the tower's largest product (577 x 4096 x 1024).
 *
 *     bench/bench-vision [--threads N] [--layers L]   (make bench runs it)
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lavinia/error.h"
#include "lavinia/ops.h"
#include "model/clip.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    int threads = 0, layers = 24;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--layers") == 0)
            layers = atoi(argv[i + 1]);
    }
    if (threads > 0)
        lv_set_threads(threads);
    struct lv_model_config c;
    lv_model_config_init(&c);
    c.dim = 4096;
    c.has_vision = true;
    c.projector = LV_PROJ_MLP2X_GELU;
    c.vision = (struct lv_vision_config){ .dim = 1024, .hidden = 4096, .n_layers = layers,
                                          .n_heads = 16, .image_size = 336, .patch_size = 14,
                                          .n_channels = 3, .norm_eps = 1e-5f };
    strcpy(c.vision.act, "quick_gelu");
    c.vision_feature_layer = -2;
    lv_clip *v;
    if (lv_clip_new_random(&v, &c, 1) != LV_OK) {
        fprintf(stderr, "bench-vision: %s\n", lv_errmsg());
        return 1;
    }
    int64_t T = 577, D = 1024, F = 4096, N = 576, L = v->n_run;
    double flops = (double)L * (2.0 * T * (4.0 * D * D + 2.0 * D * F) + 4.0 * T * T * D) +
                   2.0 * N * (D * 4096.0 + 4096.0 * 4096.0) + 2.0 * N * D * 3 * 14 * 14;
    float *px = calloc(3 * 336 * 336, sizeof *px), *tok = malloc((size_t)N * 4096 * 4);
    lv_clip_encode(v, px, tok, NULL);   /* warm-up: the graph arena grows once */
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        lv_clip_encode(v, px, tok, NULL);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    /* the ceiling: OpenBLAS's own multi-threaded sgemm on the tower's largest product */
    float *a = calloc((size_t)(T * D), 4), *b = calloc((size_t)(F * D), 4),
          *y = malloc((size_t)(T * F) * 4);
    openblas_set_num_threads(lv_get_threads());
    double sbest = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)T, (blasint)F, (blasint)D,
                    1.0f, a, (blasint)D, b, (blasint)D, 0.0f, y, (blasint)F);
        double dt = now() - t0;
        sbest = dt < sbest ? dt : sbest;
    }
    openblas_set_num_threads(1);
    double ceiling = 2.0 * T * F * D / sbest;
    printf("ViT-L/14-336 (%lld of %d blocks run, feature layer -2) + MLP projector, %d "
           "thread(s)\n", (long long)L, layers, lv_get_threads());
    printf("FLOPs per image: %.1f G\n", flops / 1e9);
    printf("time per image: %.3f s (best of 3) = %.1f GFLOP/s\n", best, flops / best / 1e9);
    printf("sgemm ceiling (577 x 4096 x 1024, OpenBLAS): %.1f GFLOP/s\n", ceiling / 1e9);
    printf("share of the ceiling: %.1f%%\n", 100.0 * flops / best / ceiling);
    free(px);
    free(tok);
    free(a);
    free(b);
    free(y);
    lv_clip_free(v);
    return 0;
}

// This machine's FP32 peak, measured: one thread per core runs 12 independent FMA chains on
// 256-bit registers (enough to cover FMA latency on both FMA pipes). Prints GFLOP/s for all
// threads together. Usage: fma_peak THREADS. Built and run by scripts/bench-engine.
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERATIONS 50000000L
#define CHAINS 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx2,fma"))) static void *chains(void *result) {
    volatile float seed = 1;  // distinct, opaque starting values: the compiler cannot merge chains
    __m256 a[CHAINS];
    for (int c = 0; c < CHAINS; c++) a[c] = _mm256_set1_ps(seed + c);
    const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (long i = 0; i < ITERATIONS; i++) {
#pragma GCC unroll 12
        for (int c = 0; c < CHAINS; c++) a[c] = _mm256_fmadd_ps(a[c], x, y);
    }
    __m256 sum = a[0];
    for (int c = 1; c < CHAINS; c++) sum = _mm256_add_ps(sum, a[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    *(float *)result = lanes[0];
    return 0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) threads = 1;
    pthread_t handles[256];
    float results[256];
    double start = now();
    for (int t = 0; t < threads; t++) pthread_create(&handles[t], 0, chains, &results[t]);
    for (int t = 0; t < threads; t++) pthread_join(handles[t], 0);
    double seconds = now() - start;
    double flops = (double)threads * ITERATIONS * CHAINS * 8 * 2;
    printf("gflops=%.1f\n", flops / seconds / 1e9);
    return results[0] == 12345 ? 1 : 0;  // keeps the results alive
}

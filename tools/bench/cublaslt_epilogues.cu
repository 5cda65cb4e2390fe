// cuBLASLt TF32 GEMM time per epilogue and transpose pair (the probe behind crates/lamina-cuda/
// PERF.md's "backward epilogues" and "TT weight gradients" rows). On the GPU machine:
//   nvcc -O2 -o /tmp/lt tools/bench/cublaslt_epilogues.cu -lcublasLt && /tmp/lt [M N K]
// M × N is the column-major result (lamina's n × m), K the reduction; default 4096 4096 2048.
// Prints, for each epilogue and (TRANSA, TRANSB), the heuristic's status, algorithms found and
// the mean µs of 20 launches (-1 when there is no algorithm).
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#define CK(x) do { auto e = (x); if (e != 0) { printf("err %d at %s:%d\n", (int)e, __FILE__, __LINE__); } } while (0)
int main(int argc, char** argv) {
  int M = 4096, N = 4096, K = 2048; // D col-major rows M (our n), cols N (our m)
  if (argc > 3) { M = atoi(argv[1]); N = atoi(argv[2]); K = atoi(argv[3]); }
  cublasLtHandle_t h; CK(cublasLtCreate(&h));
  size_t ws_bytes = 16 << 20; void* ws; cudaMalloc(&ws, ws_bytes);
  float *A, *B, *D, *bias; void* aux;
  cudaMalloc(&A, sizeof(float) * (size_t)M * K); cudaMalloc(&B, sizeof(float) * (size_t)K * N);
  cudaMalloc(&D, sizeof(float) * (size_t)M * N); cudaMalloc(&bias, sizeof(float) * (M > N ? M : N));
  cudaMalloc(&aux, (size_t)M * N); cudaMemset(A, 0, sizeof(float)*(size_t)M*K); cudaMemset(B, 0, sizeof(float)*(size_t)K*N);
  struct E { const char* n; cublasLtEpilogue_t e; } eps[] = {
    {"DEFAULT", CUBLASLT_EPILOGUE_DEFAULT}, {"BIAS", CUBLASLT_EPILOGUE_BIAS}, {"RELU_BIAS", CUBLASLT_EPILOGUE_RELU_BIAS},
    {"RELU_AUX_BIAS", CUBLASLT_EPILOGUE_RELU_AUX_BIAS}, {"DRELU", CUBLASLT_EPILOGUE_DRELU}, {"DRELU_BGRAD", CUBLASLT_EPILOGUE_DRELU_BGRAD},
    {"BGRADA", CUBLASLT_EPILOGUE_BGRADA}, {"BGRADB", CUBLASLT_EPILOGUE_BGRADB}};
  cudaStream_t s; cudaStreamCreate(&s);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (auto& ep : eps) for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++) {
    cublasLtMatmulDesc_t d; CK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F));
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &oa, 4));
    CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &ob, 4));
    CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep.e, sizeof(ep.e)));
    if (ep.e != CUBLASLT_EPILOGUE_DEFAULT) CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, 8));
    if (ep.e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS || ep.e == CUBLASLT_EPILOGUE_DRELU || ep.e == CUBLASLT_EPILOGUE_DRELU_BGRAD) {
      CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, 8));
      int64_t ld = M; CK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, 8));
    }
    cublasLtMatrixLayout_t la, lb, ld_;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, ta ? K : M, ta ? M : K, ta ? K : M));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, tb ? N : K, tb ? K : N, tb ? N : K));
    CK(cublasLtMatrixLayoutCreate(&ld_, CUDA_R_32F, M, N, M));
    cublasLtMatmulPreference_t p; CK(cublasLtMatmulPreferenceCreate(&p));
    CK(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, 8));
    cublasLtMatmulHeuristicResult_t r; int got = 0;
    auto st = cublasLtMatmulAlgoGetHeuristic(h, d, la, lb, ld_, ld_, p, 1, &r, &got);
    float us = -1;
    if (st == 0 && got > 0) {
      float one = 1, zero = 0;
      for (int i = 0; i < 3; i++) cublasLtMatmul(h, d, &one, A, la, B, lb, &zero, D, ld_, D, ld_, &r.algo, ws, ws_bytes, s);
      cudaEventRecord(e0, s);
      for (int i = 0; i < 20; i++) cublasLtMatmul(h, d, &one, A, la, B, lb, &zero, D, ld_, D, ld_, &r.algo, ws, ws_bytes, s);
      cudaEventRecord(e1, s); cudaEventSynchronize(e1); cudaEventElapsedTime(&us, e0, e1); us *= 1000.0f / 20;
    }
    printf("%-14s %c%c status %d algos %d  %8.1f us\n", ep.n, ta ? 'T' : 'N', tb ? 'T' : 'N', (int)st, got, us);
    cublasLtMatmulPreferenceDestroy(p); cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(ld_); cublasLtMatmulDescDestroy(d);
  }
  printf("cuda error: %s\n", cudaGetErrorString(cudaGetLastError()));
}

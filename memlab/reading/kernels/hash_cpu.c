/* memlab's C kernel for MemoryFormer on the CPU: hash_read's "c" backend (memlab/reading/kernels/cpu.py loads it).

   Forward: addressing (K sign codes h(z_k) and weights p(z_k), MemoryFormer's hash and bucket-weight equations,
   memlab.hashing) and the weighted gather of the K rows, in one call, no intermediate tensors.
   Backward: the gather's table gradient and dL/dw in one pass (dL/dx is done in torch from dL/dw by the closed form,
   memlab.hashing.bucket_probability_grad).

   Compiled on first use with the system C compiler (cc/gcc/clang) and cached; see cpu.py for flags and fallbacks. */
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define GROUP 8  /* tables summed in one pass over a token's output row */

/* rows[k] = k*2^tau + h(z_k), w[k] = p(z_k) (or ||z_k||_1 p(z_k)), z_k = xn[k*tau : (k+1)*tau], for one token.
   Bit i of h is [z_i >= 0] (sign(0) = +), LSB = z_0: memlab.hashing.sign_codes. p = prod_i sigmoid(scale*|z_i|). */
static void address_token(const float *xn, int64_t K, int64_t tau, float scale, int l1,
                          int64_t *rows, float *w, float *sig) {
    const int64_t d_in = K * tau;
    for (int64_t j = 0; j < d_in; j++) sig[j] = 1.0f / (1.0f + expf(-scale * fabsf(xn[j])));
    for (int64_t k = 0; k < K; k++) {
        int64_t code = 0;
        float p = 1.0f, a = 0.0f;
        for (int64_t i = 0; i < tau; i++) {
            float v = xn[k * tau + i];
            code |= (int64_t)(v >= 0.0f) << i;
            p *= sig[k * tau + i];
            a += fabsf(v);
        }
        rows[k] = (k << tau) + code;
        w[k] = l1 ? a * p : p;
    }
}

/* o[c0:c1] += sum_{k < cnt} w[k] * table[rows[k], c0:c1]. A full group reads its 8 rows side by side in one loop:
   8 independent streams keep the memory system busy and o is loaded and stored once per 8 rows, not once per row. */
static void accumulate(float *restrict o, const float *restrict table, const int64_t *rows, const float *w,
                       int64_t cnt, int64_t d, int64_t c0, int64_t c1) {
    if (cnt == GROUP) {
        const float *r0 = table + rows[0] * d, *r1 = table + rows[1] * d, *r2 = table + rows[2] * d,
                    *r3 = table + rows[3] * d, *r4 = table + rows[4] * d, *r5 = table + rows[5] * d,
                    *r6 = table + rows[6] * d, *r7 = table + rows[7] * d;
        const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7];
        for (int64_t j = c0; j < c1; j++)
            o[j] += ((w0 * r0[j] + w1 * r1[j]) + (w2 * r2[j] + w3 * r3[j]))
                  + ((w4 * r4[j] + w5 * r5[j]) + (w6 * r6[j] + w7 * r7[j]));
        return;
    }
    for (int64_t k = 0; k < cnt; k++) {
        const float *r = table + rows[k] * d;
        const float wk = w[k];
        for (int64_t j = c0; j < c1; j++) o[j] += wk * r[j];
    }
}

/* Thread t of nt: address the tokens it needs, then sum rows into its share of the output. Each thread walks the
   tables in groups of GROUP, all of its tokens per group: at d=1024, tau=8 a group is 8 MB, so a row hit by several
   tokens comes from L3 after its first read, not from DRAM again. No barrier per group: on a machine whose other
   cores are busy, a descheduled thread stalls every barrier for a scheduler time slice (measured with one of two
   cores busy, 4 tokens: 72 ms per call with a barrier per group, 8 ms without; 0.03 ms on an idle machine). The one barrier (column split only) is an orphaned directive: with nt == 1 this runs
   outside any parallel region and it does nothing. */
static void forward_part(const float *x, const float *table, const float *bias, float *out, int64_t n_tok, int64_t K,
                         int64_t tau, int64_t d, float scale, int l1, int64_t *rows, float *w, float *sig,
                         int64_t t, int64_t nt) {
    const int split_tokens = n_tok >= 2 * nt;  /* two tokens or more per thread: split the tokens */
    int64_t n0 = 0, n1 = n_tok, c0 = 0, c1 = d;
    if (split_tokens) {
        n0 = n_tok * t / nt;
        n1 = n_tok * (t + 1) / nt;
    } else {  /* few tokens: every thread streams a column slice (whole 64-byte lines) of every row */
        c0 = (d * t / nt) & ~(int64_t)15;
        c1 = t == nt - 1 ? d : (d * (t + 1) / nt) & ~(int64_t)15;
    }
    for (int64_t n = n_tok * t / nt; n < n_tok * (t + 1) / nt; n++)
        address_token(x + n * K * tau, K, tau, scale, l1, rows + n * K, w + n * K, sig + t * K * tau);
    if (!split_tokens) {  /* every thread reads every token's addresses */
        #pragma omp barrier
    }
    for (int64_t n = n0; n < n1; n++) {
        if (bias) memcpy(out + n * d + c0, bias + c0, (c1 - c0) * sizeof(float));
        else memset(out + n * d + c0, 0, (c1 - c0) * sizeof(float));
    }
    for (int64_t g0 = 0; g0 < K; g0 += GROUP) {
        const int64_t cnt = K - g0 < GROUP ? K - g0 : GROUP;
        for (int64_t n = n0; n < n1; n++)
            accumulate(out + n * d, table, rows + n * K + g0, w + n * K + g0, cnt, d, c0, c1);
    }
}

/* Fused HashMemory forward: out (n_tok, d) = sum_k w_k table[rows_k] (+ bias), addressing computed here, on
   `threads` OpenMP threads (torch's own pool: the same libgomp). rows_out / w_out may be NULL; when given they
   receive the addresses. Returns 0 on success, 1 if out of memory. */
int memlab_hash_forward(const float *x, const float *table, const float *bias, float *out,
                        int64_t n_tok, int64_t K, int64_t tau, int64_t d, float scale, int l1,
                        int64_t *rows_out, float *w_out, int threads) {
    if (threads < 1) threads = 1;
    int64_t *rows = rows_out ? rows_out : (int64_t *)malloc(sizeof(int64_t) * (n_tok * K + 1));
    float *w = w_out ? w_out : (float *)malloc(sizeof(float) * (n_tok * K + 1));
    float *sig = (float *)malloc(sizeof(float) * (K * tau * threads + 1));
    int status = !rows || !w || !sig;
    if (!status && threads == 1) {
        forward_part(x, table, bias, out, n_tok, K, tau, d, scale, l1, rows, w, sig, 0, 1);
    } else if (!status) {
        #pragma omp parallel num_threads(threads)
        {
            int64_t t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            forward_part(x, table, bias, out, n_tok, K, tau, d, scale, l1, rows, w, sig, t, nt);
        }
    }
    if (!rows_out) free(rows);
    if (!w_out) free(w);
    free(sig);
    return status;
}

/* Backward of the gather, thread t of nt, columns [c0, c1): grad_table[rows[n,k]] += w[n,k] g[n] and the partial dot
   products gw[n,k] = <g[n], table[rows[n,k]]> over these columns. Threads own disjoint columns, so no two write the
   same grad_table element (no atomics); tables in groups of GROUP as in the forward, so the group's rows and
   gradient rows stay in cache across the tokens that hit them. */
static void backward_part(const float *g, const float *table, const int64_t *rows, const float *w, float *grad_table,
                          float *gw, int64_t n_tok, int64_t K, int64_t d, int64_t c0, int64_t c1) {
    for (int64_t g0 = 0; g0 < K; g0 += GROUP) {
        const int64_t g1 = K - g0 < GROUP ? K : g0 + GROUP;
        for (int64_t n = 0; n < n_tok; n++) {
            const float *gn = g + n * d;
            for (int64_t k = g0; k < g1; k++) {
                const int64_t r = rows[n * K + k];
                const float *tr = table + r * d;
                float *gr = grad_table ? grad_table + r * d : NULL;
                const float wk = w[n * K + k];
                float dot = 0.0f;
                if (gw && gr) {  /* one pass: read the row and its gradient row once */
                    for (int64_t j = c0; j < c1; j++) {
                        dot += gn[j] * tr[j];
                        gr[j] += wk * gn[j];
                    }
                } else if (gw) {
                    for (int64_t j = c0; j < c1; j++) dot += gn[j] * tr[j];
                } else {
                    for (int64_t j = c0; j < c1; j++) gr[j] += wk * gn[j];
                }
                if (gw) gw[n * K + k] = dot;
            }
        }
    }
}

/* HashMemory backward through the gather: grad_table (rows, d), zero-filled by the caller, receives sum w g; grad_w
   (n_tok, K) receives <g, row>. Either may be NULL. Deterministic: each thread sums its columns in token order, and the
   per-thread partial dot products are added in thread order. Returns 0 on success, 1 if out of memory. */
int memlab_hash_backward(const float *g, const float *table, const int64_t *rows, const float *w, float *grad_table,
                         float *grad_w, int64_t n_tok, int64_t K, int64_t d, int threads) {
    if (threads < 1) threads = 1;
    if (threads == 1) {
        backward_part(g, table, rows, w, grad_table, grad_w, n_tok, K, d, 0, d);
        return 0;
    }
    float *partial = grad_w ? (float *)malloc(sizeof(float) * (n_tok * K * threads + 1)) : NULL;
    if (grad_w && !partial) return 1;
    int used = 1;
    #pragma omp parallel num_threads(threads)
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        if (t == 0) used = (int)nt;
        const int64_t c0 = (d * t / nt) & ~(int64_t)15;
        const int64_t c1 = t == nt - 1 ? d : (d * (t + 1) / nt) & ~(int64_t)15;
        backward_part(g, table, rows, w, grad_table, partial ? partial + t * n_tok * K : NULL, n_tok, K, d, c0, c1);
    }
    if (grad_w) {
        for (int64_t i = 0; i < n_tok * K; i++) {
            float acc = 0.0f;
            for (int t = 0; t < used; t++) acc += partial[t * n_tok * K + i];
            grad_w[i] = acc;
        }
        free(partial);
    }
    return 0;
}

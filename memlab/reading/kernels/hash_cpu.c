/* memlab's C kernel for MemoryFormer on the CPU: hash_read's "c" backend (memlab/reading/kernels/cpu.py loads it).

   Forward: addressing (K sign codes h(z_k) and weights p(z_k), MemoryFormer's hash and bucket-weight equations,
   memlab.hashing) and the weighted gather of the K rows, in one call, no intermediate tensors.
   Backward: the gather's table gradient and dL/dw in one pass (dL/dx is done in torch from dL/dw by the closed form,
   memlab.hashing.bucket_probability_grad). Two versions: memlab_hash_backward (token order, into a zero-filled dense
   gradient) and memlab_hash_backward_rows (row order, from reverse indices: each touched row is written once, so the
   gradient can be row-sparse, (U, d) for the U distinct rows read, or dense without a separate zero-fill).

   Compiled on first use with the system C compiler (cc/gcc/clang) and cached; see cpu.py for flags and fallbacks. */
#include <stdint.h>
#include <float.h>
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

/* Addressing alone: rows (n_tok, K) and w (n_tok, K) of every token, tokens split over threads. MemoryFormer's attention
   hashes once and reads its Q, K and V tables with the same addresses (memlab_bag_forward); this is that hash, without
   the ~20 torch ops of the equations. Returns 0 on success, 1 if out of memory. */
int memlab_hash_address(const float *x, int64_t *rows, float *w, int64_t n_tok, int64_t K, int64_t tau, float scale,
                        int l1, int threads) {
    if (threads < 1) threads = 1;
    float *sig = (float *)malloc(sizeof(float) * (K * tau * threads + 1));
    if (!sig) return 1;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t n = 0; n < n_tok; n++) {
        int64_t t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        address_token(x + n * K * tau, K, tau, scale, l1, rows + n * K, w + n * K, sig + t * K * tau);
    }
    free(sig);
    return 0;
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


/* Backward by rows (the "reverse indices" strategy of Memory Layers at Scale's kernels, on the CPU): a counting sort of
   the n_tok*K reads by row gives, for each of the U distinct rows read, the list of (token, k) that read it, in token
   order. Row u is then summed in one pass over its readers, out[u] = sum w g[n], and each reader's
   grad_w = <g[n], table[r]> comes from the same pass, with the row in L1. Every output row is written exactly once:
   no zero-fill of the whole gradient, no read-modify-write, no atomics; each row is owned by one thread and summed in
   token order, so the result does not depend on the thread count.

   Rows must be < 2^31 and n_tok*K < 2^32 (the sort packs a row and a read id into one int64).
   row_ids (min(n_tok*K, R) int64): receives the U distinct rows, ascending; *n_unique receives U.
   values: NULL (no table gradient), or row-sparse (dense == 0): (U, d) rows in row_ids order, or dense (dense == 1):
   the whole (R, d) gradient, rows not read set to 0. grad_w (n_tok, K) or NULL. Returns 0, or 1 if out of memory. */
static int compare_int64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int memlab_hash_backward_rows(const float *g, const float *table, const int64_t *rows, const float *w, int64_t n_tok,
                              int64_t K, int64_t d, int64_t R, float *values, int dense, int64_t *row_ids,
                              float *grad_w, int threads, int64_t *n_unique) {
    if (threads < 1) threads = 1;
    const int64_t nk = n_tok * K;
    int64_t *order = (int64_t *)malloc(sizeof(int64_t) * (nk + 1));        /* read ids (n*K + k), grouped by row */
    int64_t *first = (int64_t *)malloc(sizeof(int64_t) * (nk + 2));        /* start of the u-th distinct row in order */
    if (!order || !first) { free(order); free(first); return 1; }
    int64_t U = 0;
    if (nk * 16 < R) {  /* few reads (a few tokens): sort them, O(nk log nk), instead of a pass over all R rows */
        for (int64_t i = 0; i < nk; i++) order[i] = (rows[i] << 32) | i;  /* row-major, then read id: token order */
        qsort(order, (size_t)nk, sizeof(int64_t), compare_int64);
        for (int64_t e = 0; e < nk; e++) {
            const int64_t r = order[e] >> 32;
            if (e == 0 || r != row_ids[U - 1]) { row_ids[U] = r; first[U] = e; U++; }
            order[e] &= 0xffffffffLL;
        }
    } else {  /* counting sort by row: readers of row r at start[r] .. start[r+1] */
        int64_t *start = (int64_t *)calloc((size_t)R + 1, sizeof(int64_t));
        if (!start) { free(order); free(first); return 1; }
        for (int64_t i = 0; i < nk; i++) start[rows[i] + 1]++;
        for (int64_t r = 0; r < R; r++) {
            if (start[r + 1]) { row_ids[U] = r; first[U] = start[r]; U++; }
            start[r + 1] += start[r];
        }
        for (int64_t i = 0; i < nk; i++) order[start[rows[i]]++] = i;  /* ascending i: token order within a row */
        free(start);
    }
    first[U] = nk;
    *n_unique = U;
    /* threads take contiguous runs of rows holding ~nk/threads reads each (hot rows make rows unequal) */
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t u0 = 0, u1 = 0, lo = nk * t / nt, hi = nk * (t + 1) / nt;
        while (u0 < U && first[u0] < lo) u0++;  /* first row that starts in [lo, hi) */
        u1 = u0;
        while (u1 < U && first[u1] < hi) u1++;
        if (t == nt - 1) u1 = U;
        if (values && dense) {  /* rows nobody read, between this thread's first and the next thread's: zeros */
            const int64_t r0 = t == 0 ? 0 : (u0 < U ? row_ids[u0] : R);
            const int64_t r1 = t == nt - 1 ? R : (u1 < U ? row_ids[u1] : R);
            int64_t next = u0;
            for (int64_t r = r0; r < r1; r++) {
                if (next < u1 && row_ids[next] == r) { next++; continue; }
                memset(values + r * d, 0, d * sizeof(float));
            }
        }
        for (int64_t u = u0; u < u1; u++) {
            const int64_t r = row_ids[u];
            const float *tr = table + r * d;
            float *out = values ? values + (dense ? r : u) * d : NULL;
            for (int64_t e = first[u]; e < first[u + 1]; e++) {
                const int64_t i = order[e];
                const float *gn = g + (i / K) * d;
                const float wk = w[i];
                if (out && grad_w) {
                    float dot = 0.0f;
                    if (e == first[u]) {
                        for (int64_t j = 0; j < d; j++) { dot += gn[j] * tr[j]; out[j] = wk * gn[j]; }
                    } else {
                        for (int64_t j = 0; j < d; j++) { dot += gn[j] * tr[j]; out[j] += wk * gn[j]; }
                    }
                    grad_w[i] = dot;
                } else if (out) {
                    if (e == first[u]) for (int64_t j = 0; j < d; j++) out[j] = wk * gn[j];
                    else for (int64_t j = 0; j < d; j++) out[j] += wk * gn[j];
                } else if (grad_w) {
                    float dot = 0.0f;
                    for (int64_t j = 0; j < d; j++) dot += gn[j] * tr[j];
                    grad_w[i] = dot;
                }
            }
        }
    }
    free(order);
    free(first);
    return 0;
}

/* dL/dx from dL/dw, the closed form of memlab.hashing (bucket_probability_grad / l1_bucket_weight_grad):
     paper: dp/dz_i = p * scale * sign(z_i) * sigmoid(-scale |z_i|)           (scale = 2/t, sign(0) = +)
     l1:    dw/dz_i = sign(z_i) * p * (1 + ||z||_1 * scale * sigmoid(-scale |z_i|))
   grad_x (n_tok, K*tau) = grad_w[n, k] * dw/dz_i; one pass over x, tokens split over threads. */
void memlab_hash_addressing_grad(const float *x, const float *grad_w, float *grad_x, int64_t n_tok, int64_t K,
                                 int64_t tau, float scale, int l1, int threads) {
    if (threads < 1) threads = 1;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t n = 0; n < n_tok; n++) {
        float e[64];  /* sigmoid(-scale |z_i|) of one chunk; tau <= 64 */
        for (int64_t k = 0; k < K; k++) {
            const float *z = x + (n * K + k) * tau;
            float *gx = grad_x + (n * K + k) * tau;
            float p = 1.0f, a = 0.0f;
            for (int64_t i = 0; i < tau; i++) {
                const float m = fabsf(z[i]);
                p *= 1.0f / (1.0f + expf(-scale * m));
                e[i] = 1.0f / (1.0f + expf(scale * m));
                a += m;
            }
            const float gw = grad_w[n * K + k];
            for (int64_t i = 0; i < tau; i++) {
                const float sign = z[i] >= 0.0f ? 1.0f : -1.0f;
                gx[i] = l1 ? gw * (sign * p * (1.0f + a * scale * e[i])) : gw * (sign * p * scale * e[i]);
            }
        }
    }
}

/* The weighted bag alone, rows and weights given: out (n_tok, d) = sum_k w[n, k] table[rows[n, k]]. MemoryFormer's
   attention hashes once and reads three tables with the same addresses (HashMemory.read); this is that read, in the
   forward's loop order (bag entries in groups of GROUP, all of a thread's tokens per group, tokens split over threads,
   or column slices when there are fewer than 2 tokens per thread). Its backward is memlab_hash_backward_rows. */
void memlab_bag_forward(const float *table, const int64_t *rows, const float *w, float *out, int64_t n_tok,
                        int64_t K, int64_t d, int threads) {
    if (threads < 1) threads = 1;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int64_t t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t n0 = 0, n1 = n_tok, c0 = 0, c1 = d;
        if (n_tok >= 2 * nt) {
            n0 = n_tok * t / nt;
            n1 = n_tok * (t + 1) / nt;
        } else {
            c0 = (d * t / nt) & ~(int64_t)15;
            c1 = t == nt - 1 ? d : (d * (t + 1) / nt) & ~(int64_t)15;
        }
        for (int64_t n = n0; n < n1; n++) memset(out + n * d + c0, 0, (c1 - c0) * sizeof(float));
        for (int64_t g0 = 0; g0 < K; g0 += GROUP) {
            const int64_t cnt = K - g0 < GROUP ? K - g0 : GROUP;
            for (int64_t n = n0; n < n1; n++)
                accumulate(out + n * d, table, rows + n * K + g0, w + n * K + g0, cnt, d, c0, c1);
        }
    }
}

/* Lazy AdamW on the rows of a coalesced row-sparse gradient, in place: for each touched row r (row_ids[u]) and column
   j, the update of torch.optim.AdamW (decoupled decay, eps outside the bias-corrected root):
     p *= 1 - lr*wd;  m += (1-b1)(g - m);  v = b2 v + (1-b2) g^2;  p -= (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)
   Rows not read are neither read nor written. memlab.RowSparseAdam calls it for fp32 CPU tables (no gather/scatter
   copies of the parameter and both moments); rows are split over threads, each row owned by one. */
void memlab_lazy_adamw(float *param, float *exp_avg, float *exp_avg_sq, const int64_t *row_ids, const float *grad,
                       int64_t n_rows, int64_t d, double lr, double beta1, double beta2, double eps, double wd,
                       double bias_correction1, double bias_correction2_sqrt, int threads) {
    if (threads < 1) threads = 1;
    const float decay = (float)(1.0 - lr * wd), one_minus_b1 = (float)(1.0 - beta1), b2 = (float)beta2,
                one_minus_b2 = (float)(1.0 - beta2), step_size = (float)(lr / bias_correction1),
                bc2_sqrt = (float)bias_correction2_sqrt, epsf = (float)eps;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t u = 0; u < n_rows; u++) {
        const int64_t r = row_ids[u];
        float *p = param + r * d, *m = exp_avg + r * d, *v = exp_avg_sq + r * d;
        const float *g = grad + u * d;
        for (int64_t j = 0; j < d; j++) {
            const float gj = g[j];
            const float mj = m[j] + one_minus_b1 * (gj - m[j]);
            const float vj = b2 * v[j] + one_minus_b2 * gj * gj;
            m[j] = mj;
            v[j] = vj;
            /* Under -ffast-math gcc vectorises sqrtf(v) as v * rsqrt(v), which is NaN for a denormal v (a coordinate
               whose gradients have all been < 1e-19): v is floored at FLT_MIN, whose root (1e-19) is invisible next
               to eps (1e-8) in fp32, so the result is the exact formula's for any eps > 1e-12. */
            const float root = sqrtf(fmaxf(vj, FLT_MIN));
            p[j] = p[j] * decay - step_size * mj / (root / bc2_sqrt + epsf);
        }
    }
}

/* ---------------------------------------------------------------------------------------------------------------
   Product keys (Lample et al. 2019): the exact top-k over n*n sums s1[i] + s2[j] from the top-k of each half and the
   top-k of their k*k pairwise sums (memlab.product_keys.product_topk), for many rows in one call, no temporaries. */

/* Insert (s, i) into vals/idx (sorted descending, *len entries, capacity k); drops the smallest when full. */
static void topk_insert(float *vals, int64_t *idx, int64_t *len, int64_t k, float s, int64_t i) {
    int64_t pos = *len < k ? *len : k - 1;
    if (*len == k && !(s > vals[k - 1])) return;
    while (pos > 0 && s > vals[pos - 1]) {
        vals[pos] = vals[pos - 1];
        idx[pos] = idx[pos - 1];
        pos--;
    }
    vals[pos] = s;
    idx[pos] = i;
    if (*len < k) (*len)++;
}

/* Top k of a[0..n) into vals/idx, sorted descending: quickselect of the k largest on a scratch copy (O(n)), then an
   insertion sort of those k. Ties may be taken in any order (as torch.topk). */
static void topk_select(const float *a, int64_t n, int64_t k, float *sv, int64_t *si, float *vals, int64_t *idx) {
    for (int64_t i = 0; i < n; i++) { sv[i] = a[i]; si[i] = i; }
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {  /* partition so that sv[0..k) hold the k largest */
        const float pivot = sv[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (sv[i] > pivot) i++;
            while (sv[j] < pivot) j--;
            if (i <= j) {
                float tv = sv[i]; sv[i] = sv[j]; sv[j] = tv;
                int64_t ti = si[i]; si[i] = si[j]; si[j] = ti;
                i++; j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
    int64_t len = 0;
    for (int64_t i = 0; i < k; i++) topk_insert(vals, idx, &len, k, sv[i], si[i]);
}

/* Half scores of n_tok tokens x heads rows: row (t, h) reads s1 + t*stride_tok + h*stride_head (and s2 likewise), n
   scores each (so a bmm output laid out (heads, 2, tokens, n) is read in place). Writes, for row t*heads + h, the
   top-k scores sorted descending (their softmax with softmax != 0) and indices i*n + j. k <= n. Rows split over
   threads. */
void memlab_product_topk(const float *s1, const float *s2, int64_t n_tok, int64_t heads, int64_t stride_tok,
                         int64_t stride_head, int64_t n, int64_t k, float *out_scores, int64_t *out_indices,
                         int softmax, int threads) {
    if (threads < 1) threads = 1;
    const int64_t rows = n_tok * heads;
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *v1 = (float *)malloc(sizeof(float) * (3 * k + n));
        int64_t *i1 = (int64_t *)malloc(sizeof(int64_t) * (3 * k + n));
        float *v2 = v1 + k, *vb = v1 + 2 * k, *sv = v1 + 3 * k;
        int64_t *i2 = i1 + k, *ib = i1 + 2 * k, *si = i1 + 3 * k;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t off = (r / heads) * stride_tok + (r % heads) * stride_head;
            int64_t lb = 0;
            topk_select(s1 + off, n, k, sv, si, v1, i1);
            topk_select(s2 + off, n, k, sv, si, v2, i2);
            for (int64_t p = 0; p < k; p++) {
                if (lb == k && !(v1[p] + v2[0] > vb[k - 1])) break;  /* rows of the k x k grid only shrink */
                for (int64_t q = 0; q < k; q++) {
                    const float s = v1[p] + v2[q];
                    if (lb == k && !(s > vb[k - 1])) break;
                    topk_insert(vb, ib, &lb, k, s, i1[p] * n + i2[q]);
                }
            }
            float *os = out_scores + r * k;
            int64_t *oi = out_indices + r * k;
            if (softmax) {
                float total = 0.0f;
                for (int64_t p = 0; p < k; p++) { os[p] = expf(vb[p] - vb[0]); total += os[p]; }
                for (int64_t p = 0; p < k; p++) os[p] /= total;
            } else {
                for (int64_t p = 0; p < k; p++) os[p] = vb[p];
            }
            for (int64_t p = 0; p < k; p++) oi[p] = ib[p];
        }
        free(v1);
        free(i1);
    }
}

/*
 * The Monte Carlo Thompson-sampling choice of one request, as one compiled call.
 *
 * Same arithmetic as the numpy/Python reference in recsvc/bandit/variants.py
 * (gaussian_wins + serve) and linear.py (LinearThompsonPolicy.cells), bit for bit:
 * float32 scores z * sd + mean, the first maximum wins each draw, the served variant is
 * drawn from the win counts (with the per-variant floor) with the caller's uniform, and
 * the logged propensity is exactly the probability of the variant served.
 *
 * Why compiled: inside the server a choice runs with cold caches (gRPC, protobuf and store
 * work between two requests evict the interpreter's and numpy's code); a dozen small numpy
 * calls and a Python pass over ~80 cells cost 0.2-0.3 ms there. This is one call over
 * ~80 cells x 64 draws (docs/benchmarks/bandit.md).
 *
 * Inputs are validated (lengths, rows, codes): a bad call raises ValueError, never reads
 * outside a buffer. Compiled with -ffp-contract=off so z * sd + mean is not fused into an
 * FMA (numpy rounds the product first).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_VARIANTS 256

/* A Python list (or tuple) of floats into doubles; -1 with an exception on error. */
static int doubles_of(PyObject *seq, Py_ssize_t want, double *out, const char *what)
{
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (len < want) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: %zd values, need %zd", what, len, want);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < want; i++) {
        double v = PyFloat_AsDouble(items[i]);
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        out[i] = v;
    }
    Py_DECREF(fast);
    return 0;
}

/*
 * One item: S draws over its k cells (mean[j], sd[j]), win counts, then the served draw
 * with uniform u and per-variant floor f (serve() in variants.py).
 */
static void choose_item(const float *mean, const float *sd, int k, const float *noise,
                        Py_ssize_t stride, int S, double u, double f, long *chosen,
                        double *prop)
{
    long wins[MAX_VARIANTS];
    for (int j = 0; j < k; j++)
        wins[j] = 0;
    for (int s = 0; s < S; s++) {
        int best_j = 0;
        float best = noise[s] * sd[0];
        best = best + mean[0];
        for (int j = 1; j < k; j++) {
            float x = noise[j * stride + s] * sd[j];
            x = x + mean[j];
            if (x > best) {
                best = x;
                best_j = j;
            }
        }
        wins[best_j] += 1;
    }
    long total = 0;
    for (int j = 0; j < k; j++)
        total += wins[j];
    double target = u * (double)total;
    int j = 0;
    if (f > 0.0) {
        double a = 1.0 - (double)k * f, b = f * (double)total, acc = 0.0, wj = 0.0;
        for (j = 0; j < k; j++) {
            wj = (double)wins[j] * a + b;
            acc += wj;
            if (acc > target)
                break;
        }
        if (j == k)
            j = k - 1;
        *chosen = j;
        *prop = wj / (double)total;
        return;
    }
    long acc = 0;
    for (j = 0; j < k; j++) {
        acc += wins[j];
        if ((double)acc > target)
            break;
    }
    if (j == k) { /* u * total rounded up to total: the last variant that won */
        for (j = k - 1; j > 0 && wins[j] == 0; j--)
            ;
    }
    *chosen = j;
    *prop = (double)wins[j] / (double)total;
}

/* A C-contiguous (with ``writable``, writable) buffer of float32 ("f") or int64 ("l"/"q")
 * items; -1 with an exception. */
static int get_buffer_rw(PyObject *obj, Py_buffer *view, char kind, int writable,
                         const char *what)
{
    view->obj = NULL;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format != NULL ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int ok = kind == 'f' ? (f[0] == 'f' && view->itemsize == 4)
                         : ((f[0] == 'l' || f[0] == 'q') && view->itemsize == 8);
    if (!ok || f[1] != '\0') {
        PyErr_Format(PyExc_ValueError, "%s must be %s, got format %s", what,
                     kind == 'f' ? "float32" : "int64", view->format ? view->format : "B");
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

static int get_buffer(PyObject *obj, Py_buffer *view, char kind, const char *what)
{
    return get_buffer_rw(obj, view, kind, 0, what);
}

/* A CellTable (float32 [n_rows, 2, vmax], 1 <= vmax <= MAX_VARIANTS) and its int64 [n_rows]
 * variant counts; -1 with an exception (both released). */
static int get_table(PyObject *table_o, PyObject *k_rows_o, Py_buffer *table, Py_buffer *k_rows,
                     const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "%s: table", what);
    if (get_buffer(table_o, table, 'f', name) < 0)
        return -1;
    snprintf(name, sizeof name, "%s: k_rows", what);
    if (get_buffer(k_rows_o, k_rows, 'q', name) < 0) {
        PyBuffer_Release(table);
        return -1;
    }
    if (table->ndim != 3 || table->shape[1] != 2 || table->shape[0] != k_rows->len / 8 ||
        table->shape[2] < 1 || table->shape[2] > MAX_VARIANTS) {
        PyErr_Format(PyExc_ValueError,
                     "%s: table must be float32 [n_rows, 2, vmax] and k_rows int64 [n_rows]",
                     what);
        PyBuffer_Release(table);
        PyBuffer_Release(k_rows);
        return -1;
    }
    return 0;
}

typedef struct {
    Py_buffer noise;
    Py_ssize_t start;
    int S;
    Py_ssize_t n;
    int vmax;
    double *u;
    double *floors;
} Draw;

/* The shared arguments: noise buffer, start offset, samples, uniforms, floors. */
static int draw_args(Draw *d, PyObject *noise, Py_ssize_t start, int S, Py_ssize_t n, int vmax,
                     PyObject *u, PyObject *floors)
{
    d->u = NULL;
    d->floors = NULL;
    d->noise.obj = NULL;
    if (S < 1 || vmax < 1 || vmax > MAX_VARIANTS || n < 0 || start < 0) {
        PyErr_SetString(PyExc_ValueError, "choice: bad n_samples, vmax, n or start");
        return -1;
    }
    if (get_buffer(noise, &d->noise, 'f', "choice: noise") < 0)
        return -1;
    Py_ssize_t need = (Py_ssize_t)vmax * n * S;
    if (start + need > d->noise.len / 4) {
        PyErr_Format(PyExc_ValueError, "choice: noise holds %zd values, need %zd from %zd",
                     d->noise.len / 4, need, start);
        return -1;
    }
    d->u = PyMem_Malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    d->floors = PyMem_Malloc(sizeof(double) * (size_t)(vmax + 1));
    if (d->u == NULL || d->floors == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (doubles_of(u, n, d->u, "choice: uniforms") < 0 ||
        doubles_of(floors, vmax + 1, d->floors, "choice: floors") < 0)
        return -1;
    d->start = start;
    d->S = S;
    d->n = n;
    d->vmax = vmax;
    return 0;
}

static void draw_free(Draw *d)
{
    if (d->noise.obj != NULL)
        PyBuffer_Release(&d->noise);
    PyMem_Free(d->u);
    PyMem_Free(d->floors);
}

/* Runs the draws for every item; mean/sd of item i at cells + i * 2 * vmax. */
static PyObject *draw_all(Draw *d, const float *cells, const long *ks)
{
    PyObject *chosen = PyList_New(d->n), *props = PyList_New(d->n);
    if (chosen == NULL || props == NULL) {
        Py_XDECREF(chosen);
        Py_XDECREF(props);
        return NULL;
    }
    const float *noise = (const float *)d->noise.buf + d->start;
    Py_ssize_t stride = d->n * d->S; /* noise laid out [vmax, n, S] */
    for (Py_ssize_t i = 0; i < d->n; i++) {
        int k = (int)ks[i];
        long j;
        double p;
        const float *mean = cells + i * 2 * d->vmax;
        choose_item(mean, mean + d->vmax, k, noise + i * d->S, stride, d->S, d->u[i],
                    d->floors[k], &j, &p);
        PyObject *oj = PyLong_FromLong(j), *op = PyFloat_FromDouble(p);
        if (oj == NULL || op == NULL) {
            Py_XDECREF(oj);
            Py_XDECREF(op);
            Py_DECREF(chosen);
            Py_DECREF(props);
            return NULL;
        }
        PyList_SET_ITEM(chosen, i, oj);
        PyList_SET_ITEM(props, i, op);
    }
    return Py_BuildValue("(NN)", chosen, props);
}

/* rows: a list of ints < n_rows; k_rows[row] in 1..vmax. Fills rows_out and ks_out. */
static int row_args(PyObject *rows, const int64_t *k_rows, Py_ssize_t n_rows, int vmax,
                    Py_ssize_t n, long *rows_out, long *ks_out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        long r = PyLong_AsLong(PyList_GET_ITEM(rows, i));
        if (r == -1 && PyErr_Occurred())
            return -1;
        if (r < 0 || r >= n_rows) {
            PyErr_Format(PyExc_ValueError, "choice: row %ld outside the catalog (%zd rows)",
                         r, n_rows);
            return -1;
        }
        long k = (long)k_rows[r];
        if (k < 1 || k > vmax) {
            PyErr_Format(PyExc_ValueError, "choice: row %ld has %ld variants (vmax %d)", r, k,
                         vmax);
            return -1;
        }
        rows_out[i] = r;
        ks_out[i] = k;
    }
    return 0;
}

PyDoc_STRVAR(choose_rows_doc,
"choose_rows(table, rows, k_rows, noise, start, n_samples, u, floors) -> (chosen, props)\n\n"
"Thompson-sampling choice for each catalog row in ``rows`` (a list of ints) from the\n"
"float32 CellTable ``table`` [n_rows, 2, vmax] (means then sds), ``k_rows`` int64 [n_rows]\n"
"variant counts, float32 ``noise`` read from ``start`` as [vmax, n, n_samples], one\n"
"uniform per row and the per-variant floor by variant count. Returns the chosen variant\n"
"index and its propensity per row.");

static PyObject *choose_rows(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *table_o, *rows, *k_rows_o, *noise, *u, *floors;
    Py_ssize_t start;
    int S;
    if (!PyArg_ParseTuple(args, "OO!OOniOO", &table_o, &PyList_Type, &rows, &k_rows_o, &noise,
                          &start, &S, &u, &floors))
        return NULL;
    Py_buffer table, k_rows;
    if (get_table(table_o, k_rows_o, &table, &k_rows, "choose_rows") < 0)
        return NULL;
    PyObject *result = NULL;
    long *buf = NULL;
    Draw d;
    Py_ssize_t n = PyList_GET_SIZE(rows), n_rows = k_rows.len / 8;
    int vmax = (int)table.shape[2];
    if (draw_args(&d, noise, start, S, n, vmax, u, floors) < 0)
        goto done;
    buf = PyMem_Malloc(sizeof(long) * 2 * (size_t)(n > 0 ? n : 1));
    float *cells = PyMem_Malloc(sizeof(float) * 2 * (size_t)vmax * (size_t)(n > 0 ? n : 1));
    if (buf == NULL || cells == NULL) {
        PyMem_Free(cells);
        PyErr_NoMemory();
        goto done;
    }
    if (row_args(rows, (const int64_t *)k_rows.buf, n_rows, vmax, n, buf, buf + n) == 0) {
        const float *t = (const float *)table.buf;
        for (Py_ssize_t i = 0; i < n; i++)
            memcpy(cells + i * 2 * vmax, t + buf[i] * 2 * vmax, sizeof(float) * 2 * vmax);
        result = draw_all(&d, cells, buf + n);
    }
    PyMem_Free(cells);
done:
    PyMem_Free(buf);
    draw_free(&d);
    PyBuffer_Release(&table);
    PyBuffer_Release(&k_rows);
    return result;
}

PyDoc_STRVAR(choose_linear_doc,
"choose_linear(rows, k_rows, code_rows, offsets, prior, m, var, noise, start, n_samples, u,\n"
"              floors) -> (chosen, props)\n\n"
"Linear TS with distinct themes per item: variant j of catalog row r scores\n"
"N(m[c] + o[j], var[c] + o[k + j]) with c = code_rows[r, j] and o = offsets[r] (a list of\n"
"k means then k variances, or None for prior[k]); then as choose_rows.");

static PyObject *choose_linear(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *rows, *k_rows_o, *codes_o, *offsets, *prior, *m_o, *var_o, *noise, *u, *floors;
    Py_ssize_t start;
    int S;
    if (!PyArg_ParseTuple(args, "O!OOO!O!OOOniOO", &PyList_Type, &rows, &k_rows_o, &codes_o,
                          &PyList_Type, &offsets, &PyList_Type, &prior, &m_o, &var_o, &noise,
                          &start, &S, &u, &floors))
        return NULL;
    Py_buffer k_rows, codes;
    if (get_buffer(k_rows_o, &k_rows, 'q', "choose_linear: k_rows") < 0)
        return NULL;
    if (get_buffer(codes_o, &codes, 'q', "choose_linear: code_rows") < 0) {
        PyBuffer_Release(&k_rows);
        return NULL;
    }
    PyObject *result = NULL;
    long *buf = NULL;
    float *cells = NULL;
    double *m = NULL, *var = NULL;
    Draw d;
    d.u = NULL;
    d.floors = NULL;
    d.noise.obj = NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), n_rows = k_rows.len / 8;
    int vmax = codes.ndim == 2 ? (int)codes.shape[1] : 0;
    if (codes.ndim != 2 || codes.shape[0] != n_rows || PyList_GET_SIZE(offsets) != n_rows ||
        PyList_GET_SIZE(prior) <= vmax) {
        PyErr_SetString(PyExc_ValueError,
                        "choose_linear: code_rows must be int64 [n_rows, vmax], k_rows int64 "
                        "[n_rows], offsets one entry per row, prior one per variant count");
        goto done;
    }
    Py_ssize_t T = PySequence_Size(m_o);
    if (T < 1 || PySequence_Size(var_o) != T) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "choose_linear: m and var need one value per theme");
        goto done;
    }
    m = PyMem_Malloc(sizeof(double) * (size_t)T);
    var = PyMem_Malloc(sizeof(double) * (size_t)T);
    buf = PyMem_Malloc(sizeof(long) * 2 * (size_t)(n > 0 ? n : 1));
    cells = PyMem_Malloc(sizeof(float) * 2 * (size_t)vmax * (size_t)(n > 0 ? n : 1));
    if (m == NULL || var == NULL || buf == NULL || cells == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (doubles_of(m_o, T, m, "choose_linear: m") < 0 ||
        doubles_of(var_o, T, var, "choose_linear: var") < 0)
        goto done;
    if (draw_args(&d, noise, start, S, n, vmax, u, floors) < 0)
        goto done;
    if (row_args(rows, (const int64_t *)k_rows.buf, n_rows, vmax, n, buf, buf + n) < 0)
        goto done;
    const int64_t *code_rows = (const int64_t *)codes.buf;
    double o[2 * MAX_VARIANTS];
    for (Py_ssize_t i = 0; i < n; i++) {
        long r = buf[i], k = buf[n + i];
        PyObject *off = PyList_GET_ITEM(offsets, r);
        if (off == Py_None)
            off = PyList_GET_ITEM(prior, k);
        if (doubles_of(off, 2 * k, o, "choose_linear: offsets") < 0)
            goto done;
        float *mean = cells + i * 2 * vmax, *sd = mean + vmax;
        for (long j = 0; j < k; j++) {
            int64_t c = code_rows[r * vmax + j];
            if (c < 0 || c >= T) {
                PyErr_Format(PyExc_ValueError, "choose_linear: theme code %lld of row %ld",
                             (long long)c, r);
                goto done;
            }
            mean[j] = (float)(m[c] + o[j]);
            sd[j] = (float)sqrt(var[c] + o[k + j]);
        }
    }
    result = draw_all(&d, cells, buf + n);
done:
    PyMem_Free(m);
    PyMem_Free(var);
    PyMem_Free(buf);
    PyMem_Free(cells);
    draw_free(&d);
    PyBuffer_Release(&k_rows);
    PyBuffer_Release(&codes);
    return result;
}

/* h.get(field, 0.0) for a dict or any mapping (None: no hash); -1.0 + exception on error. */
static int hash_get(PyObject *h, PyObject *field, double *out)
{
    *out = 0.0;
    if (h == Py_None)
        return 0;
    PyObject *v;
    if (PyDict_CheckExact(h)) {
        v = PyDict_GetItemWithError(h, field); /* borrowed */
        if (v == NULL)
            return PyErr_Occurred() ? -1 : 0;
        Py_INCREF(v);
    } else {
        v = PyObject_GetItem(h, field);
        if (v == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return -1;
            PyErr_Clear();
            return 0;
        }
    }
    double x = PyFloat_AsDouble(v);
    Py_DECREF(v);
    if (x == -1.0 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

PyDoc_STRVAR(ts_moments_doc,
"ts_moments(table, rows, item_hashes, bucket_hashes, n_fields, c_fields, prior_alpha,\n"
"           prior_beta, backoff_strength)\n\n"
"ThompsonPolicy.beta_params + moments for each catalog row in ``rows``, written into the\n"
"float32 CellTable ``table`` [n_rows, 2, vmax] (the first k columns of the row: means, then\n"
"sds; padding is left as it is). ``item_hashes``/``bucket_hashes`` hold each item's counter\n"
"hash (a mapping, or None for none); ``n_fields``/``c_fields`` each item's impression and\n"
"click field names.");

static PyObject *ts_moments(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *table_o, *rows, *item_hs, *bucket_hs, *n_fields, *c_fields;
    double pa, pb, cap;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!O!ddd", &table_o, &PyList_Type, &rows, &PyList_Type,
                          &item_hs, &PyList_Type, &bucket_hs, &PyList_Type, &n_fields,
                          &PyList_Type, &c_fields, &pa, &pb, &cap))
        return NULL;
    Py_buffer table;
    if (get_buffer_rw(table_o, &table, 'f', 1, "ts_moments: table") < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if (table.ndim != 3 || table.shape[1] != 2) {
        PyErr_SetString(PyExc_ValueError, "ts_moments: table must be float32 [n_rows, 2, vmax]");
        goto done;
    }
    if (PyList_GET_SIZE(item_hs) != n || PyList_GET_SIZE(bucket_hs) != n ||
        PyList_GET_SIZE(n_fields) != n || PyList_GET_SIZE(c_fields) != n) {
        PyErr_SetString(PyExc_ValueError, "ts_moments: one hash and one field list per row");
        goto done;
    }
    Py_ssize_t n_rows = table.shape[0], vmax = table.shape[2];
    float *values = (float *)table.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        long r = PyLong_AsLong(PyList_GET_ITEM(rows, i));
        if (r == -1 && PyErr_Occurred())
            goto done;
        PyObject *nf = PyList_GET_ITEM(n_fields, i), *cf = PyList_GET_ITEM(c_fields, i);
        if (!PyTuple_Check(nf) || !PyTuple_Check(cf) || PyTuple_GET_SIZE(nf) != PyTuple_GET_SIZE(cf)) {
            PyErr_SetString(PyExc_ValueError, "ts_moments: field names must be equal-length tuples");
            goto done;
        }
        Py_ssize_t k = PyTuple_GET_SIZE(nf);
        if (r < 0 || r >= n_rows || k > vmax) {
            PyErr_Format(PyExc_ValueError, "ts_moments: row %ld with %zd variants outside the "
                         "table [%zd, 2, %zd]", r, k, n_rows, vmax);
            goto done;
        }
        PyObject *item_h = PyList_GET_ITEM(item_hs, i), *bucket_h = PyList_GET_ITEM(bucket_hs, i);
        float *mean_out = values + r * 2 * vmax, *sd_out = mean_out + vmax;
        for (Py_ssize_t j = 0; j < k; j++) {
            /* Same operations, same order as ThompsonPolicy.beta_params and moments. */
            double c, nn, a, b;
            if (hash_get(item_h, PyTuple_GET_ITEM(cf, j), &c) < 0 ||
                hash_get(item_h, PyTuple_GET_ITEM(nf, j), &nn) < 0)
                goto done;
            c = 0.0 > c ? 0.0 : c;
            nn = c > nn ? c : nn;
            a = pa + c;
            b = (pb + nn) - c;
            if (bucket_h != Py_None) {
                double cb, nb;
                if (hash_get(bucket_h, PyTuple_GET_ITEM(cf, j), &cb) < 0 ||
                    hash_get(bucket_h, PyTuple_GET_ITEM(nf, j), &nb) < 0)
                    goto done;
                cb = 0.0 > cb ? 0.0 : cb;
                nb = cb > nb ? cb : nb;
                double t = a + b;
                double strength = cap < t ? cap : t;
                double mean = a / t;
                a = strength * mean + cb;
                b = (strength * (1.0 - mean) + nb) - cb;
            }
            double t = a + b;
            double mean = a / t;
            mean_out[j] = (float)mean;
            sd_out[j] = (float)sqrt(mean * (1.0 - mean) / (t + 1.0));
        }
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&table);
    return result;
}

PyDoc_STRVAR(theme_scores_doc,
"theme_scores(score, phi) -> (m, var)\n\n"
"The linear policy's per-theme score means and variances for one user: ``score`` float32\n"
"[2T, F] times ``phi`` float32 [F] (accumulated in double), split into the first T values\n"
"and the last T clamped at 0. What ``(score @ phi).tolist()`` gives, without a BLAS call.");

static PyObject *theme_scores(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *score_o, *phi_o;
    if (!PyArg_ParseTuple(args, "OO", &score_o, &phi_o))
        return NULL;
    Py_buffer score, phi;
    if (get_buffer(score_o, &score, 'f', "theme_scores: score") < 0)
        return NULL;
    if (get_buffer(phi_o, &phi, 'f', "theme_scores: phi") < 0) {
        PyBuffer_Release(&score);
        return NULL;
    }
    PyObject *m = NULL, *var = NULL, *result = NULL;
    Py_ssize_t f = phi.len / 4;
    if (score.ndim != 2 || score.shape[1] != f || score.shape[0] % 2 != 0) {
        PyErr_SetString(PyExc_ValueError, "theme_scores: score must be [2T, F] with phi [F]");
        goto done;
    }
    Py_ssize_t t = score.shape[0] / 2;
    m = PyList_New(t);
    var = PyList_New(t);
    if (m == NULL || var == NULL)
        goto done;
    const float *a = (const float *)score.buf, *x = (const float *)phi.buf;
    for (Py_ssize_t row = 0; row < 2 * t; row++) {
        double acc = 0.0;
        const float *w = a + row * f;
        for (Py_ssize_t i = 0; i < f; i++)
            acc += (double)w[i] * (double)x[i];
        if (row >= t && !(acc > 0.0))
            acc = 0.0;
        PyObject *v = PyFloat_FromDouble(acc);
        if (v == NULL)
            goto done;
        PyList_SET_ITEM(row < t ? m : var, row < t ? row : row - t, v);
    }
    result = Py_BuildValue("(OO)", m, var);
done:
    Py_XDECREF(m);
    Py_XDECREF(var);
    PyBuffer_Release(&score);
    PyBuffer_Release(&phi);
    return result;
}

/* sum(w) as this Python computes it: start 0, so the first float, then the rest in order
 * (3.12+ adds Neumaier's compensation, as builtin sum does there). */
static double python_sum(const double *w, Py_ssize_t k)
{
    double total = w[0];
#if PY_VERSION_HEX >= 0x030C0000
    double c = 0.0;
    for (Py_ssize_t j = 1; j < k; j++) {
        double x = w[j], t = total + x;
        if (fabs(total) >= fabs(x))
            c += (total - t) + x;
        else
            c += (x - t) + total;
        total = t;
    }
    if (c != 0.0 && isfinite(c))
        total += c;
#else
    for (Py_ssize_t j = 1; j < k; j++)
        total += w[j];
#endif
    return total;
}

PyDoc_STRVAR(serve_lists_doc,
"serve_lists(choice, ks, u, floors) -> (chosen, props)\n\n"
"The served draw of variants.serve() from per-item choice weights (a list of lists of\n"
"floats, e.g. cached Thompson-sampling choice probabilities, of which the first ks[i]\n"
"count): item i gets variant j with probability f + (1 - k f) w_j / sum(w) (f = floors[k]),\n"
"drawn with the uniform u[i].");

static PyObject *serve_lists(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *choice, *ks, *u_o, *floors_o;
    if (!PyArg_ParseTuple(args, "O!O!OO", &PyList_Type, &choice, &PyList_Type, &ks, &u_o,
                          &floors_o))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(choice);
    if (PyList_GET_SIZE(ks) != n) {
        PyErr_SetString(PyExc_ValueError, "serve_lists: one variant count per item");
        return NULL;
    }
    double floors[MAX_VARIANTS + 1], w[MAX_VARIANTS];
    Py_ssize_t n_floors = PySequence_Size(floors_o);
    if (n_floors < 2 || n_floors > MAX_VARIANTS + 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "serve_lists: floors for 1..256 variants");
        return NULL;
    }
    PyObject *chosen = NULL, *props = NULL;
    double *u = PyMem_Malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (u == NULL)
        return PyErr_NoMemory();
    if (doubles_of(u_o, n, u, "serve_lists: uniforms") < 0 ||
        doubles_of(floors_o, n_floors, floors, "serve_lists: floors") < 0)
        goto fail;
    chosen = PyList_New(n);
    props = PyList_New(n);
    if (chosen == NULL || props == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(choice, i);
        Py_ssize_t k = PyLong_AsSsize_t(PyList_GET_ITEM(ks, i));
        if (k == -1 && PyErr_Occurred())
            goto fail;
        if (k < 1 || k >= n_floors) {
            PyErr_Format(PyExc_ValueError, "serve_lists: item %zd has %zd variants", i, k);
            goto fail;
        }
        if (doubles_of(row, k, w, "serve_lists: weights") < 0)
            goto fail;
        double total = python_sum(w, k), target = u[i] * total, f = floors[k], p;
        Py_ssize_t j;
        if (f > 0.0) {
            double a = 1.0 - (double)k * f, b = f * total, acc = 0.0, wj = 0.0;
            for (j = 0; j < k; j++) {
                wj = w[j] * a + b;
                acc += wj;
                if (acc > target)
                    break;
            }
            if (j == k)
                j = k - 1;
            p = wj / total;
        } else {
            double acc = 0.0;
            for (j = 0; j < k; j++) {
                acc += w[j];
                if (acc > target)
                    break;
            }
            if (j == k) /* u * total rounded up to total: the last variant with weight */
                for (j = k - 1; j > 0 && !(w[j] > 0.0); j--)
                    ;
            p = w[j] / total;
        }
        PyObject *oj = PyLong_FromSsize_t(j), *op = PyFloat_FromDouble(p);
        if (oj == NULL || op == NULL) {
            Py_XDECREF(oj);
            Py_XDECREF(op);
            goto fail;
        }
        PyList_SET_ITEM(chosen, i, oj);
        PyList_SET_ITEM(props, i, op);
    }
    PyMem_Free(u);
    return Py_BuildValue("(NN)", chosen, props);
fail:
    PyMem_Free(u);
    Py_XDECREF(chosen);
    Py_XDECREF(props);
    return NULL;
}

PyDoc_STRVAR(choice_probs_doc,
"choice_probs(table, rows, k_rows, noise, start, n_samples) -> list[list[float]]\n\n"
"Thompson sampling's choice probabilities of each catalog row in ``rows`` from its CellTable\n"
"row (as ThompsonPolicy._choice_probabilities): ``n_samples`` draws per variant read from\n"
"``noise`` at ``start`` laid out [vmax, len(rows), n_samples]; every maximum of a draw wins\n"
"(ties count for each, as count_max); one list of vmax shares per row (padding 0).");

static PyObject *choice_probs(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *table_o, *rows, *k_rows_o, *noise_o;
    Py_ssize_t start;
    int S;
    if (!PyArg_ParseTuple(args, "OO!OOni", &table_o, &PyList_Type, &rows, &k_rows_o, &noise_o,
                          &start, &S))
        return NULL;
    Py_buffer table, k_rows, noise;
    noise.obj = NULL;
    if (get_table(table_o, k_rows_o, &table, &k_rows, "choice_probs") < 0)
        return NULL;
    PyObject *out = NULL;
    long *buf = NULL;
    Py_ssize_t m = PyList_GET_SIZE(rows), n_rows = k_rows.len / 8;
    int vmax = (int)table.shape[2];
    if (S < 1 || start < 0) {
        PyErr_SetString(PyExc_ValueError, "choice_probs: n_samples >= 1 and start >= 0");
        goto done;
    }
    if (get_buffer(noise_o, &noise, 'f', "choice_probs: noise") < 0)
        goto done;
    if (start + (Py_ssize_t)vmax * m * S > noise.len / 4) {
        PyErr_Format(PyExc_ValueError, "choice_probs: noise holds %zd values, need %zd from %zd",
                     noise.len / 4, (Py_ssize_t)vmax * m * S, start);
        goto done;
    }
    buf = PyMem_Malloc(sizeof(long) * 2 * (size_t)(m > 0 ? m : 1));
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (row_args(rows, (const int64_t *)k_rows.buf, n_rows, vmax, m, buf, buf + m) < 0)
        goto done;
    out = PyList_New(m);
    if (out == NULL)
        goto done;
    const float *z = (const float *)noise.buf + start, *t = (const float *)table.buf;
    Py_ssize_t stride = m * S;
    for (Py_ssize_t i = 0; i < m; i++) {
        long k = buf[m + i];
        const float *mean = t + buf[i] * 2 * vmax, *sd = mean + vmax;
        long wins[MAX_VARIANTS];
        float x[MAX_VARIANTS];
        for (int j = 0; j < vmax; j++)
            wins[j] = 0;
        for (int s = 0; s < S; s++) {
            float best = -INFINITY;
            for (long j = 0; j < k; j++) {
                float v = z[j * stride + i * S + s] * sd[j];
                v = v + mean[j];
                x[j] = v;
                if (v > best)
                    best = v;
            }
            for (long j = 0; j < k; j++)
                if (x[j] == best)
                    wins[j] += 1;
        }
        long total = 0;
        for (long j = 0; j < k; j++)
            total += wins[j];
        PyObject *row = PyList_New(vmax);
        if (row == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, row);
        for (int j = 0; j < vmax; j++) {
            PyObject *p = PyFloat_FromDouble((double)wins[j] / (double)total);
            if (p == NULL) {
                Py_CLEAR(out);
                goto done;
            }
            PyList_SET_ITEM(row, j, p);
        }
    }
done:
    PyMem_Free(buf);
    if (noise.obj != NULL)
        PyBuffer_Release(&noise);
    PyBuffer_Release(&table);
    PyBuffer_Release(&k_rows);
    return out;
}

static PyMethodDef methods[] = {
    {"choose_rows", choose_rows, METH_VARARGS, choose_rows_doc},
    {"choose_linear", choose_linear, METH_VARARGS, choose_linear_doc},
    {"ts_moments", ts_moments, METH_VARARGS, ts_moments_doc},
    {"theme_scores", theme_scores, METH_VARARGS, theme_scores_doc},
    {"serve_lists", serve_lists, METH_VARARGS, serve_lists_doc},
    {"choice_probs", choice_probs, METH_VARARGS, choice_probs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_choice",
    "Compiled Monte Carlo Thompson-sampling choice (reference: recsvc/bandit/variants.py).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__choice(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "MAX_VARIANTS", MAX_VARIANTS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

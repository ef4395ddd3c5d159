/* ledger/_smt_fast.c -- the state tree's hot loop in C (optional).
 *
 * Owns one function, one(), a C rendering of the common cases of
 * ledger/smt_update_one.py update_one() (the batch's _Batch.one): a single change that
 * inserts a key or gives a key a new value, reached through internal nodes. The Python
 * code stays the definition of the tree: this module reads and writes exactly the node
 * encodings, node keys, hashes, stale keys and cache entries that the Python code does,
 * in the same order, and answers NotImplemented -- before it has changed anything -- for
 * every case it does not handle (deletions, a subtree that is a single leaf, two keys
 * sharing the next nibble, a missing or corrupt node), which the Python code then
 * handles (and reports) itself.
 *
 * The node format is defined once, in ledger/smt_node.py (module docstring: encodings,
 * node keys; check_internal()/check_leaf(): what a valid stored node is). C cannot call
 * it in the hot loop, so the layout is re-implemented here: the tags 0x01 (leaf) and 0x02
 * (internal), the header of 5 bytes, 32-byte child hashes then 8-byte versions, and the
 * node key version || depth || packed path. Every such place below says which part of
 * smt_node.py it renders. tests/ledger/test_smt_fast.py checks the two against each
 * other on random batches (same bytes out).
 *
 * Why: the state tree costs each node of a devnet at least ~28 us per attestation, ~20
 * of it computing (docs/ARCHITECTURE.md, "Bounds"), and this function was most of the
 * update's Python samples. Measured: updates 2x faster in scripts/bench_smt.py, ~5 us
 * less CPU per transaction per node in scripts/bench_node.py. SHA-256 is OpenSSL's
 * (libcrypto, which CPython's hashlib uses too); nothing here is a cryptographic
 * primitive of our own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <string.h>

#define KEY 32
#define MAX_DEPTH 64

static unsigned char leaf_tag[64], node_tag[64];
static Py_ssize_t leaf_tag_len = -1, node_tag_len = -1;
static PyObject *same_ref = NULL; /* the Python module's _SAME sentinel */

static void
leaf_hash(const unsigned char *k, const unsigned char *v, Py_ssize_t vlen,
          unsigned char out[32])
{
    unsigned char vh[32];
    SHA256_CTX c;
    SHA256(v, (size_t)vlen, vh);
    SHA256_Init(&c);
    SHA256_Update(&c, leaf_tag, (size_t)leaf_tag_len);
    SHA256_Update(&c, k, KEY);
    SHA256_Update(&c, vh, 32);
    SHA256_Final(out, &c);
}

/* SHA-256(NODE_TAG || bitmap (2) || child hashes) */
static void
node_hash(const unsigned char *bm2, const unsigned char *hs, Py_ssize_t hslen,
          unsigned char out[32])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, node_tag, (size_t)node_tag_len);
    SHA256_Update(&c, bm2, 2);
    SHA256_Update(&c, hs, (size_t)hslen);
    SHA256_Final(out, &c);
}

/* depth byte || the first `depth` nibbles of key, two per byte, an odd one padded
 * (smt_node.py: DEPTH[depth] + path(key, depth)) */
static Py_ssize_t
path_suffix(unsigned char *out, int depth, const unsigned char *key)
{
    int half = depth >> 1;
    out[0] = (unsigned char)depth;
    memcpy(out + 1, key, (size_t)half);
    if (depth & 1) {
        out[1 + half] = key[half] & 0xF0;
        return 2 + half;
    }
    return 1 + half;
}

/* v8 || depth || path: a node key (smt_node.py: node_key) */
static PyObject *
node_key(const unsigned char *v8, int depth, const unsigned char *key)
{
    unsigned char buf[8 + 1 + KEY + 1];
    memcpy(buf, v8, 8);
    Py_ssize_t n = path_suffix(buf + 8, depth, key);
    return PyBytes_FromStringAndSize((const char *)buf, 8 + n);
}

static PyObject *
concat2(const unsigned char *a, Py_ssize_t na, const unsigned char *b, Py_ssize_t nb)
{
    PyObject *r = PyBytes_FromStringAndSize(NULL, na + nb);
    if (r) {
        memcpy(PyBytes_AS_STRING(r), a, (size_t)na);
        memcpy(PyBytes_AS_STRING(r) + na, b, (size_t)nb);
    }
    return r;
}

static int
nibble(const unsigned char *key, int depth)
{
    unsigned char b = key[depth >> 1];
    return (depth & 1) ? (b & 15) : (b >> 4);
}

typedef struct {
    PyObject *enc; /* the node's encoding (strong) */
    PyObject *old; /* its cache key if it came from the cache, else NULL (strong) */
    int depth;
    int bit, ho, hend, vo;
    unsigned char v8[8]; /* the version it was written at */
} Frame;

static void
drop_frames(Frame *st, int n)
{
    for (int i = 0; i < n; i++) {
        Py_XDECREF(st[i].enc);
        Py_XDECREF(st[i].old);
    }
}

/* dict[key] = value, consuming the references to key and value */
static int
set_steal(PyObject *d, PyObject *key, PyObject *value)
{
    int r = (key && value) ? PyDict_SetItem(d, key, value) : -1;
    Py_XDECREF(key);
    Py_XDECREF(value);
    return r;
}

static int
append_steal(PyObject *list, PyObject *item)
{
    int r = item ? PyList_Append(list, item) : -1;
    Py_XDECREF(item);
    return r;
}

static int
pop_key(PyObject *d, PyObject *key)
{
    /* dict.pop(key, None) */
    int r = PyDict_DelItem(d, key);
    if (r < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        r = 0;
    }
    return r;
}

/* new_nodes[nv8 || depth || path(k)] = 0x01 || k || v: a new leaf
 * (smt_node.py: encode_leaf) */
static int
put_leaf(PyObject *new_nodes, const unsigned char *nv8, int depth, const unsigned char *k,
         const unsigned char *v, Py_ssize_t vlen)
{
    PyObject *leaf = PyBytes_FromStringAndSize(NULL, 1 + KEY + vlen);
    if (leaf) {
        char *p = PyBytes_AS_STRING(leaf);
        p[0] = 1;
        memcpy(p + 1, k, KEY);
        memcpy(p + 1 + KEY, v, (size_t)vlen);
    }
    return set_steal(new_nodes, node_key(nv8, depth, k), leaf);
}

/* Mark the node of frame f stale (unless at depth 0: root records are the caller's),
 * drop it from the cache if it came from there, and write its rewrite ne at
 * nv8 || depth || path; the caller then caches ne under nv8 || its hash. The Python
 * code's order. */
static int
finish_node(PyObject *cache, PyObject *new_nodes, PyObject *stale,
            const unsigned char *nv8, const unsigned char *k, const Frame *f, PyObject *ne)
{
    if (f->depth && append_steal(stale, node_key(f->v8, f->depth, k)) < 0)
        return -1;
    if (f->old && pop_key(cache, f->old) < 0)
        return -1;
    Py_INCREF(ne);
    return set_steal(new_nodes, node_key(nv8, f->depth, k), ne);
}

static PyObject *
fast_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* one(cache, get, k, v, h, v8, depth, nv8, new_nodes, stale, must_be_new, existing) */
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "one() takes 12 arguments");
        return NULL;
    }
    if (leaf_tag_len < 0) {
        PyErr_SetString(PyExc_RuntimeError, "setup() was not called");
        return NULL;
    }
    PyObject *cache = args[0], *get = args[1], *kobj = args[2], *vobj = args[3];
    PyObject *hobj = args[4], *v8obj = args[5], *new_nodes = args[8], *stale = args[9];
    PyObject *must_be_new = args[10], *existing = args[11];
    int depth = PyLong_AsLong(args[6]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    if (!PyDict_CheckExact(cache) || !PyDict_CheckExact(new_nodes) || !PyList_CheckExact(stale)
        || !PyList_CheckExact(existing) || !PyAnySet_Check(must_be_new)
        || !PyBytes_CheckExact(kobj)
        || !PyBytes_CheckExact(hobj) || !PyBytes_CheckExact(v8obj)
        || !PyBytes_CheckExact(args[7]) || PyBytes_GET_SIZE(kobj) != KEY
        || PyBytes_GET_SIZE(hobj) != 32 || PyBytes_GET_SIZE(v8obj) != 8
        || PyBytes_GET_SIZE(args[7]) != 8 || depth < 0 || depth >= MAX_DEPTH
        || !PyBytes_CheckExact(vobj))
        Py_RETURN_NOTIMPLEMENTED; /* deletions (v None) and anything unusual */

    const unsigned char *k = (const unsigned char *)PyBytes_AS_STRING(kobj);
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(vobj);
    Py_ssize_t vlen = PyBytes_GET_SIZE(vobj);
    const unsigned char *nv8 = (const unsigned char *)PyBytes_AS_STRING(args[7]);
    unsigned char h[32], v8[8];
    memcpy(h, PyBytes_AS_STRING(hobj), 32);
    memcpy(v8, PyBytes_AS_STRING(v8obj), 8);

    Frame st[MAX_DEPTH + 1];
    int nst = 0;
    PyObject *result = NULL;
    PyObject *ne = NULL;
    unsigned char rh[32];

    /* ---- down: through internal nodes to the last one on k's path (no writes) ---- */
    Frame cur;
    cur.enc = NULL;
    cur.old = NULL;
    for (;;) {
        if (depth >= MAX_DEPTH)
            goto not_implemented;
        unsigned char ck[40];
        memcpy(ck, v8, 8);
        memcpy(ck + 8, h, 32);
        PyObject *ckobj = PyBytes_FromStringAndSize((const char *)ck, 40);
        if (!ckobj)
            goto error;
        PyObject *enc = PyDict_GetItemWithError(cache, ckobj); /* borrowed */
        PyObject *old = NULL;
        if (enc) {
            Py_INCREF(enc);
            old = ckobj;
        }
        else {
            Py_DECREF(ckobj);
            if (PyErr_Occurred())
                goto error;
            PyObject *nk = node_key(v8, depth, k);
            if (!nk)
                goto error;
            enc = PyObject_CallOneArg(get, nk);
            Py_DECREF(nk);
            if (!enc)
                goto error;
            if (!PyBytes_CheckExact(enc)) {
                Py_DECREF(enc);
                goto not_implemented; /* missing (None) or odd: Python reports it */
            }
        }
        const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(enc);
        Py_ssize_t elen = PyBytes_GET_SIZE(enc);
        /* smt_node.check_internal: tag 0x02, bitmap, leafmap, 40 bytes per child */
        int bitmap = elen >= 5 ? (e[1] << 8 | e[2]) : 0;
        int leafmap = elen >= 5 ? (e[3] << 8 | e[4]) : 0;
        int n = __builtin_popcount((unsigned)bitmap);
        if (elen < 45 || e[0] != 2 || elen != 5 + 40 * n || (leafmap & ~bitmap)
            || (n == 1 && leafmap)) {
            Py_DECREF(enc);
            Py_XDECREF(old);
            goto not_implemented; /* smt_node.check_internal fails: Python raises NodeError */
        }
        int bit = 1 << nibble(k, depth);
        int rank = __builtin_popcount((unsigned)(bitmap & (bit - 1)));
        cur.enc = enc;
        cur.old = old;
        cur.depth = depth;
        cur.bit = bit;
        cur.ho = 5 + 32 * rank;
        cur.hend = 5 + 32 * n;
        cur.vo = cur.hend + 8 * rank;
        memcpy(cur.v8, v8, 8);
        if ((bitmap & bit) && !(leafmap & bit)) { /* an internal child: go down */
            st[nst++] = cur; /* the stack owns its references now */
            cur.enc = NULL;
            cur.old = NULL;
            memcpy(h, e + cur.ho, 32);
            memcpy(v8, e + cur.vo, 8);
            depth++;
            continue;
        }
        break;
    }

    /* ---- the last internal node (cur): its child slot on k's path is empty or a leaf ---- */
    {
        const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(cur.enc);
        Py_ssize_t elen = PyBytes_GET_SIZE(cur.enc);
        int bitmap = e[1] << 8 | e[2], leafmap = e[3] << 8 | e[4];
        int bit = cur.bit, ho = cur.ho, hend = cur.hend, vo = cur.vo;
        int d1 = cur.depth + 1;
        unsigned char lh[32];
        if (!(bitmap & bit)) {
            /* A new key in an empty slot: its leaf goes in the slot. */
            leaf_hash(k, v, vlen, lh);
            if (put_leaf(new_nodes, nv8, d1, k, v, vlen) < 0)
                goto error;
            ne = PyBytes_FromStringAndSize(NULL, elen + 40);
            if (!ne)
                goto error;
            /* smt_node.encode_internal's layout, with one more child */
            unsigned char *p = (unsigned char *)PyBytes_AS_STRING(ne);
            int nb = bitmap | bit, nl = leafmap | bit;
            p[0] = 2;
            p[1] = (unsigned char)(nb >> 8);
            p[2] = (unsigned char)nb;
            p[3] = (unsigned char)(nl >> 8);
            p[4] = (unsigned char)nl;
            size_t o = 5;
            memcpy(p + o, e + 5, (size_t)(ho - 5)); o += ho - 5;
            memcpy(p + o, lh, 32); o += 32;
            memcpy(p + o, e + ho, (size_t)(vo - ho)); o += vo - ho;
            memcpy(p + o, nv8, 8); o += 8;
            memcpy(p + o, e + vo, (size_t)(elen - vo));
            node_hash(p + 1, p + 5, hend + 32 - 5, rh);
        }
        else {
            /* The slot holds a leaf, one level down. */
            unsigned char lv8[8];
            memcpy(lv8, e + vo, 8);
            PyObject *nk = node_key(lv8, d1, k);
            if (!nk)
                goto error;
            PyObject *leaf = PyObject_CallOneArg(get, nk);
            if (!leaf) {
                Py_DECREF(nk);
                goto error;
            }
            /* smt_node.check_leaf: tag 0x01 || key (32) || value */
            if (!PyBytes_CheckExact(leaf) || PyBytes_GET_SIZE(leaf) < 1 + KEY
                || PyBytes_AS_STRING(leaf)[0] != 1) {
                Py_DECREF(nk);
                Py_DECREF(leaf);
                goto not_implemented;
            }
            const unsigned char *l = (const unsigned char *)PyBytes_AS_STRING(leaf);
            Py_ssize_t llen = PyBytes_GET_SIZE(leaf);
            const unsigned char *lkey = l + 1;
            if (memcmp(lkey, k, KEY) == 0) {
                int isnew = PySet_Contains(must_be_new, kobj);
                if (isnew < 0 || (isnew && PyList_Append(existing, kobj) < 0)) {
                    Py_DECREF(nk);
                    Py_DECREF(leaf);
                    goto error;
                }
                if (llen - 1 - KEY == vlen && memcmp(l + 1 + KEY, v, (size_t)vlen) == 0) {
                    Py_DECREF(nk);
                    Py_DECREF(leaf);
                    result = Py_NewRef(same_ref); /* no change */
                    goto done;
                }
                if (append_steal(stale, nk) < 0) { /* the old leaf */
                    Py_DECREF(leaf);
                    goto error;
                }
                Py_DECREF(leaf);
                /* A new value: the new leaf replaces the old one in place. */
                leaf_hash(k, v, vlen, lh);
                if (put_leaf(new_nodes, nv8, d1, k, v, vlen) < 0)
                    goto error;
                ne = PyBytes_FromStringAndSize((const char *)e, elen);
                if (!ne)
                    goto error;
                unsigned char *p = (unsigned char *)PyBytes_AS_STRING(ne);
                memcpy(p + ho, lh, 32);
                memcpy(p + vo, nv8, 8);
            }
            else {
                if (d1 >= 64) { /* unreachable for distinct keys on one path */
                    Py_DECREF(nk);
                    Py_DECREF(leaf);
                    goto not_implemented;
                }
                int kn = nibble(k, d1), ln = nibble(lkey, d1);
                if (kn == ln) { /* they part further down (1 in 16): Python's pair() */
                    Py_DECREF(nk);
                    Py_DECREF(leaf);
                    goto not_implemented;
                }
                if (append_steal(stale, nk) < 0) {
                    Py_DECREF(leaf);
                    goto error;
                }
                /* The usual split: the new node at d1 has the two leaves as children. */
                int d2 = d1 + 1;
                if (put_leaf(new_nodes, nv8, d2, k, v, vlen) < 0) {
                    Py_DECREF(leaf);
                    goto error;
                }
                if (set_steal(new_nodes, node_key(nv8, d2, lkey), leaf) < 0)
                    goto error; /* (consumed leaf) */
                leaf_hash(k, v, vlen, lh);
                unsigned char sbm[2], shs[64], sh[32];
                int sb = (1 << kn) | (1 << ln);
                sbm[0] = (unsigned char)(sb >> 8);
                sbm[1] = (unsigned char)sb;
                const unsigned char *oh = e + ho;
                if (kn < ln) {
                    memcpy(shs, lh, 32);
                    memcpy(shs + 32, oh, 32);
                }
                else {
                    memcpy(shs, oh, 32);
                    memcpy(shs + 32, lh, 32);
                }
                PyObject *sne = PyBytes_FromStringAndSize(NULL, 5 + 64 + 16);
                if (!sne)
                    goto error;
                unsigned char *s = (unsigned char *)PyBytes_AS_STRING(sne);
                s[0] = 2;
                s[1] = sbm[0];
                s[2] = sbm[1];
                s[3] = sbm[0];
                s[4] = sbm[1];
                memcpy(s + 5, shs, 64);
                memcpy(s + 69, nv8, 8);
                memcpy(s + 77, nv8, 8);
                node_hash(sbm, shs, 64, sh);
                if (set_steal(new_nodes, node_key(nv8, d1, k), sne) < 0)
                    goto error;
                /* and in this node, the child turns from a leaf into a node */
                ne = PyBytes_FromStringAndSize((const char *)e, elen);
                if (!ne)
                    goto error;
                unsigned char *p = (unsigned char *)PyBytes_AS_STRING(ne);
                int nlm = leafmap ^ bit;
                p[3] = (unsigned char)(nlm >> 8);
                p[4] = (unsigned char)nlm;
                memcpy(p + ho, sh, 32);
                memcpy(p + vo, nv8, 8);
            }
            node_hash(e + 1, (const unsigned char *)PyBytes_AS_STRING(ne) + 5, hend - 5, rh);
        }
        if (finish_node(cache, new_nodes, stale, nv8, k, &cur, ne) < 0)
            goto error;
        {
            PyObject *rk = concat2(nv8, 8, rh, 32);
            if (set_steal(cache, rk, Py_NewRef(ne)) < 0)
                goto error;
        }
        Py_CLEAR(ne);
    }

    /* ---- back up: splice the new child into each node above and rewrite it ---- */
    while (nst > 0) {
        Frame *f = &st[nst - 1];
        const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(f->enc);
        Py_ssize_t elen = PyBytes_GET_SIZE(f->enc);
        int leafmap = e[3] << 8 | e[4];
        ne = PyBytes_FromStringAndSize((const char *)e, elen);
        if (!ne)
            goto error;
        unsigned char *p = (unsigned char *)PyBytes_AS_STRING(ne);
        if (leafmap & f->bit) {
            int nlm = leafmap ^ f->bit;
            p[3] = (unsigned char)(nlm >> 8);
            p[4] = (unsigned char)nlm;
        }
        memcpy(p + f->ho, rh, 32);
        memcpy(p + f->vo, nv8, 8);
        node_hash(e + 1, p + 5, f->hend - 5, rh);
        if (finish_node(cache, new_nodes, stale, nv8, k, f, ne) < 0)
            goto error;
        PyObject *rk = concat2(nv8, 8, rh, 32);
        if (set_steal(cache, rk, ne) < 0) {
            ne = NULL;
            goto error;
        }
        ne = NULL;
        Py_CLEAR(f->enc);
        Py_CLEAR(f->old);
        nst--;
    }
    {
        PyObject *rhobj = PyBytes_FromStringAndSize((const char *)rh, 32);
        if (!rhobj)
            goto error;
        result = PyTuple_Pack(5, rhobj, args[7], Py_False, Py_None, Py_None);
        Py_DECREF(rhobj);
    }
    Py_CLEAR(cur.enc);
    Py_CLEAR(cur.old);
    return result;

done:
    Py_CLEAR(cur.enc);
    Py_CLEAR(cur.old);
    drop_frames(st, nst);
    return result;

not_implemented:
    /* Nothing was written yet on every path that comes here. */
    Py_CLEAR(cur.enc);
    Py_CLEAR(cur.old);
    drop_frames(st, nst);
    Py_RETURN_NOTIMPLEMENTED;

error:
    Py_XDECREF(ne);
    Py_CLEAR(cur.enc);
    Py_CLEAR(cur.old);
    drop_frames(st, nst);
    return NULL;
}

static PyObject *
fast_setup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* setup(LEAF_TAG, NODE_TAG, _SAME): the Python module's constants, its one source */
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])
        || PyBytes_GET_SIZE(args[0]) > 64 || PyBytes_GET_SIZE(args[1]) > 64) {
        PyErr_SetString(PyExc_TypeError, "setup(leaf_tag: bytes, node_tag: bytes, same)");
        return NULL;
    }
    leaf_tag_len = PyBytes_GET_SIZE(args[0]);
    memcpy(leaf_tag, PyBytes_AS_STRING(args[0]), (size_t)leaf_tag_len);
    node_tag_len = PyBytes_GET_SIZE(args[1]);
    memcpy(node_tag, PyBytes_AS_STRING(args[1]), (size_t)node_tag_len);
    Py_XSETREF(same_ref, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))fast_setup, METH_FASTCALL,
     "setup(leaf_tag, node_tag, same): the tree's hash tags and its no-change sentinel."},
    {"one", (PyCFunction)(void (*)(void))fast_one, METH_FASTCALL,
     "one(cache, get, k, v, h, v8, depth, nv8, new_nodes, stale, must_be_new, existing):\n"
     "ledger.smt_update_one.update_one for an insert or a new value below an internal\n"
     "node, or "
     "NotImplemented (nothing changed) for every other case."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ledger._smt_fast",
    "The state tree's hot loop in C (see ledger/smt_update_one.py, which stays its definition;\n"
    "node format: ledger/smt_node.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__smt_fast(void)
{
    return PyModule_Create(&module);
}

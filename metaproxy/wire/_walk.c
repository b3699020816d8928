/*
 * metaproxy.wire._walk — the schema-guided Thrift binary walker of metaproxy.wire.binary, in C.
 *
 * Same semantics as binary.Walker (the pure-Python reference; a differential test keeps the two
 * identical): walk one struct from `start`, skip everything by type, record the (offset of the
 * length prefix, length) of every string the location schema marks, return where the struct
 * ends (each span also carries the schema's kind string). Returns -1 as the end when the buffer is too short (read more bytes); raises ValueError
 * for malformed input. Schema nodes are the Python objects of binary.py: a dict (field id ->
 * (ttype, child)), the string "loc", or a tuple ("list"|"map", child).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define T_STOP 0
#define T_BOOL 2
#define T_BYTE 3
#define T_DOUBLE 4
#define T_I16 6
#define T_I32 8
#define T_I64 10
#define T_STRING 11
#define T_STRUCT 12
#define T_MAP 13
#define T_SET 14
#define T_LIST 15
#define T_UUID 16
#define MAX_DEPTH 64

#define INCOMPLETE (-1)
#define MALFORMED (-2)

typedef struct {
    const unsigned char *buf;
    Py_ssize_t end;
    Py_ssize_t limit;
    PyObject *spans; /* list */
    const char *error;
    Py_ssize_t error_pos;
} walker;

static int fixed_size(int t) {
    switch (t) {
    case T_BOOL: case T_BYTE: return 1;
    case T_I16: return 2;
    case T_I32: return 4;
    case T_DOUBLE: case T_I64: return 8;
    case T_UUID: return 16;
    default: return 0;
    }
}

static int valid_type(int t) {
    return t == T_BOOL || t == T_BYTE || t == T_DOUBLE || t == T_I16 || t == T_I32 || t == T_I64 ||
           t == T_STRING || t == T_STRUCT || t == T_MAP || t == T_SET || t == T_LIST || t == T_UUID;
}

static inline int32_t rd32(const unsigned char *p) {
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static inline int16_t rd16(const unsigned char *p) {
    return (int16_t)(((uint16_t)p[0] << 8) | (uint16_t)p[1]);
}

static Py_ssize_t fail(walker *w, const char *msg, Py_ssize_t pos) {
    w->error = msg;
    w->error_pos = pos;
    return MALFORMED;
}

static Py_ssize_t skip(walker *w, Py_ssize_t pos, int t, int depth) {
    int size = fixed_size(t);
    if (size) {
        pos += size;
        return pos > w->end ? INCOMPLETE : pos;
    }
    if (t == T_STRING) {
        if (pos + 4 > w->end) return INCOMPLETE;
        int32_t n = rd32(w->buf + pos);
        if (n < 0 || n > w->limit) return fail(w, "bad string length", pos);
        pos += 4 + (Py_ssize_t)n;
        return pos > w->end ? INCOMPLETE : pos;
    }
    if (depth > MAX_DEPTH) return fail(w, "nesting too deep", pos);
    if (t == T_STRUCT) {
        for (;;) {
            if (pos >= w->end) return INCOMPLETE;
            int ft = w->buf[pos];
            if (ft == T_STOP) return pos + 1;
            if (!valid_type(ft)) return fail(w, "bad field type", pos);
            pos = skip(w, pos + 3, ft, depth + 1);
            if (pos < 0) return pos;
        }
    }
    if (t == T_LIST || t == T_SET) {
        if (pos + 5 > w->end) return INCOMPLETE;
        int et = w->buf[pos];
        int32_t n = rd32(w->buf + pos + 1);
        if (!valid_type(et) || n < 0 || n > w->limit) return fail(w, "bad list header", pos);
        pos += 5;
        int es = fixed_size(et);
        if (es) {
            pos += (Py_ssize_t)n * es;
            return pos > w->end ? INCOMPLETE : pos;
        }
        for (int32_t i = 0; i < n; i++) {
            pos = skip(w, pos, et, depth + 1);
            if (pos < 0) return pos;
        }
        return pos;
    }
    if (t == T_MAP) {
        if (pos + 6 > w->end) return INCOMPLETE;
        int kt = w->buf[pos], vt = w->buf[pos + 1];
        int32_t n = rd32(w->buf + pos + 2);
        if (n < 0 || n > w->limit || (n && (!valid_type(kt) || !valid_type(vt))))
            return fail(w, "bad map header", pos);
        pos += 6;
        for (int32_t i = 0; i < n; i++) {
            pos = skip(w, pos, kt, depth + 1);
            if (pos < 0) return pos;
            pos = skip(w, pos, vt, depth + 1);
            if (pos < 0) return pos;
        }
        return pos;
    }
    return fail(w, "bad type", pos);
}

static Py_ssize_t walk_struct(walker *w, Py_ssize_t pos, PyObject *schema, int depth);

static Py_ssize_t walk_value(walker *w, Py_ssize_t pos, int t, PyObject *child, int depth) {
    if (child == NULL || child == Py_None) return skip(w, pos, t, depth);
    if (PyUnicode_Check(child)) { /* "loc" */
        if (t != T_STRING) return skip(w, pos, t, depth);
        if (pos + 4 > w->end) return INCOMPLETE;
        int32_t n = rd32(w->buf + pos);
        if (n < 0 || n > w->limit) return fail(w, "bad string length", pos);
        if (pos + 4 + (Py_ssize_t)n > w->end) return INCOMPLETE;
        PyObject *span = Py_BuildValue("(niO)", pos, (int)n, child);
        if (!span) return MALFORMED;
        int rc = PyList_Append(w->spans, span);
        Py_DECREF(span);
        if (rc < 0) return MALFORMED;
        return pos + 4 + (Py_ssize_t)n;
    }
    if (PyDict_Check(child)) {
        if (t != T_STRUCT) return skip(w, pos, t, depth);
        return walk_struct(w, pos, child, depth + 1);
    }
    if (PyTuple_Check(child) && PyTuple_GET_SIZE(child) == 2) {
        PyObject *kind = PyTuple_GET_ITEM(child, 0);
        PyObject *sub = PyTuple_GET_ITEM(child, 1);
        const char *k = PyUnicode_Check(kind) ? PyUnicode_AsUTF8(kind) : "";
        if (k && strcmp(k, "list") == 0 && (t == T_LIST || t == T_SET)) {
            if (pos + 5 > w->end) return INCOMPLETE;
            int et = w->buf[pos];
            int32_t n = rd32(w->buf + pos + 1);
            if (!valid_type(et) || n < 0 || n > w->limit) return fail(w, "bad list header", pos);
            pos += 5;
            for (int32_t i = 0; i < n; i++) {
                pos = walk_value(w, pos, et, sub, depth + 1);
                if (pos < 0) return pos;
            }
            return pos;
        }
        if (k && strcmp(k, "map") == 0 && t == T_MAP) {
            if (pos + 6 > w->end) return INCOMPLETE;
            int kt = w->buf[pos], vt = w->buf[pos + 1];
            int32_t n = rd32(w->buf + pos + 2);
            if (n < 0 || n > w->limit || (n && (!valid_type(kt) || !valid_type(vt))))
                return fail(w, "bad map header", pos);
            pos += 6;
            for (int32_t i = 0; i < n; i++) {
                pos = skip(w, pos, kt, depth + 1);
                if (pos < 0) return pos;
                pos = walk_value(w, pos, vt, sub, depth + 1);
                if (pos < 0) return pos;
            }
            return pos;
        }
    }
    return skip(w, pos, t, depth);
}

static Py_ssize_t walk_struct(walker *w, Py_ssize_t pos, PyObject *schema, int depth) {
    if (depth > MAX_DEPTH) return fail(w, "nesting too deep", pos);
    if (schema == NULL || schema == Py_None || !PyDict_Check(schema) || PyDict_GET_SIZE(schema) == 0)
        return skip(w, pos, T_STRUCT, depth);
    for (;;) {
        if (pos >= w->end) return INCOMPLETE;
        int ft = w->buf[pos];
        if (ft == T_STOP) return pos + 1;
        if (!valid_type(ft)) return fail(w, "bad field type", pos);
        if (pos + 3 > w->end) return INCOMPLETE;
        PyObject *key = PyLong_FromLong(rd16(w->buf + pos + 1));
        if (!key) return MALFORMED;
        PyObject *entry = PyDict_GetItemWithError(schema, key);
        Py_DECREF(key);
        if (entry == NULL && PyErr_Occurred()) return MALFORMED;
        if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            PyLong_AsLong(PyTuple_GET_ITEM(entry, 0)) != ft) {
            pos = skip(w, pos + 3, ft, depth + 1);
        } else {
            pos = walk_value(w, pos + 3, ft, PyTuple_GET_ITEM(entry, 1), depth + 1);
        }
        if (pos < 0) return pos;
    }
}

/* walk(buf, start, schema, limit) -> (end, spans); end is -1 when more bytes are needed */
static PyObject *py_walk(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, limit;
    PyObject *schema;
    if (!PyArg_ParseTuple(args, "y*nOn", &view, &start, &schema, &limit)) return NULL;
    walker w = {(const unsigned char *)view.buf, view.len, limit, PyList_New(0), NULL, 0};
    if (!w.spans) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t end = start > view.len ? INCOMPLETE : walk_struct(&w, start, schema, 0);
    PyBuffer_Release(&view);
    if (end == MALFORMED) {
        Py_DECREF(w.spans);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s at byte %zd", w.error ? w.error : "malformed", w.error_pos);
        return NULL;
    }
    PyObject *out = Py_BuildValue("(nN)", end, w.spans);
    return out;
}

/* walk_value(buf, start, ttype, child, limit) -> (end, spans): one value of type ttype */
static PyObject *py_walk_value(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, limit;
    int ttype;
    PyObject *child;
    if (!PyArg_ParseTuple(args, "y*niOn", &view, &start, &ttype, &child, &limit)) return NULL;
    walker w = {(const unsigned char *)view.buf, view.len, limit, PyList_New(0), NULL, 0};
    if (!w.spans) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t end = INCOMPLETE;
    if (!valid_type(ttype)) {
        end = fail(&w, "bad type", start);
    } else if (start <= view.len) {
        end = walk_value(&w, start, ttype, child, 1);
    }
    PyBuffer_Release(&view);
    if (end == MALFORMED) {
        Py_DECREF(w.spans);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s at byte %zd", w.error ? w.error : "malformed", w.error_pos);
        return NULL;
    }
    return Py_BuildValue("(nN)", end, w.spans);
}

static PyMethodDef methods[] = {
    {"walk", py_walk, METH_VARARGS, "walk(buf, start, schema, limit) -> (end or -1, spans)"},
    {"walk_value", py_walk_value, METH_VARARGS, "walk_value(buf, start, ttype, child, limit) -> (end or -1, spans)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", "Thrift binary walker (C)", -1, methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }

/* The steady state of a tunnel, in C: see wsgate/proxy/splice.py for the why. A client
 * that speaks TLS has its records read and written by _splice_tls.c; all else is here.
 *
 * A Core is one epoll set per event loop; the loop watches its fd (loop.add_reader) and
 * calls Core.poll() when any spliced socket is ready, so one call serves every ready
 * tunnel. Every read lands in the Core's one buffer and is sent on at once: no Python
 * object per read. A Splice is one tunnel in that set: byte counts, the upstream->client
 * frame cursor (frames.Cursor's exact algorithm), and what a send could not take.
 *
 * Backpressure: when a send would block, the rest of that read is kept (at most CHUNK
 * bytes per direction), its source is no longer polled and its destination is polled for
 * POLLOUT; the loop hears STALLED and FLOWING, so its send_timeout still applies. Every
 * rarer event (EOF, a socket error, the upstream's Close frame) halts the splice: its
 * sockets leave the epoll set, nothing more is read, and the loop hears WAKE or FAILED;
 * it then takes the kept bytes with stop() and goes on with its own transports.
 *
 * No Python code runs while a batch of events is handled (notices are delivered after
 * it), so no Splice can be freed while the batch still points at it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef __linux__
#error "wsgate.proxy._splice needs Linux (epoll); the pure-Python tunnel is used elsewhere"
#endif

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "_splice.h"

static PyTypeObject CoreType, SpliceType;

/* -- frames.Cursor ------------------------------------------------------------------- */

/* frames.header_end: the end of the frame whose header starts d; 0 if d is too short. */
static int header_end(const unsigned char *d, size_t n, u128 *end)
{
    if (n < 2)
        return 0;
    uint64_t size = d[1] & 0x7F;
    unsigned start = (d[1] & 0x80) ? 6 : 2;
    if (size == 126) {
        if (n < 4)
            return 0;
        size = ((uint64_t)d[2] << 8) | d[3];
        start += 2;
    } else if (size == 127) {
        if (n < 10)
            return 0;
        size = 0;
        for (int k = 2; k < 10; k++)
            size = (size << 8) | d[k];
        start += 8;
    }
    *end = (u128)start + size;
    return 1;
}

/* frames.Cursor.advance, step for step (0x88 is a whole first byte, as there). */
static void advance(Cursor *c, const unsigned char *d, size_t n)
{
    u128 i = c->left;
    if (i >= n) {
        c->left = i - n;
        return;
    }
    if (c->nheld) { /* Cursor._finish_header */
        unsigned char joined[32];
        size_t before = (size_t)c->nheld, take = n < 14 ? n : 14;
        u128 end;
        memcpy(joined, c->held, before);
        memcpy(joined + before, d, take);
        int whole = header_end(joined, before + take, &end);
        if (joined[0] == 0x88)
            c->closed = 1;
        if (!whole) {
            memcpy(c->held, joined, before + take);
            c->nheld = (int)(before + take);
            c->left = 0;
            return;
        }
        c->nheld = 0;
        i = end - before; /* held never holds a whole header: end > before */
    }
    while (i < n) {
        size_t k = (size_t)i;
        u128 end;
        if (n - k < 2)
            break;
        if (d[k] == 0x88)
            c->closed = 1;
        if (!header_end(d + k, n - k, &end))
            break;
        i = k + end;
    }
    if (i >= n) {
        c->left = i - n;
        return;
    }
    c->nheld = (int)(n - (size_t)i);
    memcpy(c->held, d + (size_t)i, (size_t)c->nheld);
    c->left = 0;
}

/* -- the event loop's side ------------------------------------------------------------ */

void notice(Batch *b, Splice *s, int kind, int side, int error)
{
    Notice *n = &b->notices[b->count++];
    Py_INCREF(s);
    n->splice = s;
    n->kind = kind;
    n->side = side;
    n->error = error;
}

static void unregister(Splice *s)
{
    if (!s->active)
        return;
    s->active = 0;
    /* Errors are ignored: a socket closed under us has left the set by itself. */
    epoll_ctl(s->core->epfd, EPOLL_CTL_DEL, s->fd[0], NULL);
    epoll_ctl(s->core->epfd, EPOLL_CTL_DEL, s->fd[1], NULL);
}

void halt(Batch *b, Splice *s, int kind, int side, int error)
{
    if (!s->active)
        return;
    unregister(s);
    notice(b, s, kind, side, error);
}

static uint32_t wanted(Splice *s, int side)
{
    return (s->kept[side].data ? 0 : EPOLLIN) | (s->kept[1 - side].data ? EPOLLOUT : 0);
}

/* Poll each fd for what it is wanted for now: a source is not read while its last read is
 * still kept; a destination is polled for POLLOUT while bytes wait for it. */
static void rearm(Batch *b, Splice *s)
{
    for (int side = 0; side < 2 && s->active; side++) {
        uint32_t events = wanted(s, side);
        if (events == s->armed[side])
            continue;
        struct epoll_event ev = {.events = events};
        ev.data.u64 = (uint64_t)(uintptr_t)s | (uint64_t)side;
        if (epoll_ctl(s->core->epfd, EPOLL_CTL_MOD, s->fd[side], &ev) < 0)
            halt(b, s, FAILED, side, errno);
        else
            s->armed[side] = events;
    }
}

/* Send as much of data as the socket of side `to` takes now; returns how much, or -1
 * (with the splice halted) on an error. */
ssize_t send_some(Batch *b, Splice *s, int to, const char *data, size_t len)
{
    size_t sent = 0;
    while (sent < len) {
        ssize_t w = send(s->fd[to], data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w >= 0) {
            sent += (size_t)w;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            halt(b, s, FAILED, to, errno);
            return -1;
        }
    }
    return (ssize_t)sent;
}

/* Keep what the other side of `side` could not take (read from `side`): its source is no
 * longer read and its destination is polled for POLLOUT. Returns -1 (halted) if it cannot. */
int keep(Batch *b, Splice *s, int side, const char *data, size_t len)
{
    Kept *k = &s->kept[side];
    char *grown = PyMem_RawRealloc(k->data, k->len + len); /* appends: a TLS alert */
    if (grown == NULL) { /* cannot keep them: the loop gets none of them either */
        halt(b, s, FAILED, 1 - side, ENOMEM);
        return -1;
    }
    int fresh = k->data == NULL;
    memcpy(grown + k->len, data, len);
    k->data = grown;
    k->len += len;
    if (fresh) {
        notice(b, s, STALLED, 1 - side, 0);
        rearm(b, s);
    }
    return 0;
}

/* Side `side` is readable: one read, sent on to the other side. */
static void pump(Batch *b, Splice *s, int side)
{
    int to = 1 - side;
    char *buf = s->core->buf;
    if (s->tls != NULL && side == CLIENT) {
        tls_pump_in(b, s);
        return;
    }
    size_t room = s->tls != NULL ? TLS_PLAIN : CHUNK;
    ssize_t n = recv(s->fd[side], buf, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            halt(b, s, FAILED, side, errno);
        return;
    }
    if (n == 0) { /* EOF: not consumed, the transport will read it again */
        halt(b, s, WAKE, side, 0);
        return;
    }
    s->received[side] += (unsigned long long)n;
    int was_closed = s->cursor.closed;
    if (side == UPSTREAM)
        advance(&s->cursor, (const unsigned char *)buf, (size_t)n);
    if (s->tls != NULL) {
        tls_pump_out(b, s, buf, (size_t)n);
    } else {
        ssize_t sent = send_some(b, s, to, buf, (size_t)n);
        if (sent < 0 || (sent < n && keep(b, s, side, buf + sent, (size_t)(n - sent)) < 0))
            return;
    }
    if (s->cursor.closed && !was_closed) /* the upstream's Close frame: the loop's job */
        halt(b, s, WAKE, side, 0);
}

/* Side `to` is writable: send what waits for it; once all has gone, read its source. */
static void flush(Batch *b, Splice *s, int to)
{
    Kept *k = &s->kept[1 - to];
    if (k->data == NULL)
        return;
    ssize_t sent = send_some(b, s, to, k->data + k->off, k->len - k->off);
    if (sent < 0)
        return;
    k->off += (size_t)sent;
    if (k->off < k->len)
        return;
    PyMem_RawFree(k->data);
    k->data = NULL;
    k->off = k->len = 0;
    notice(b, s, FLOWING, to, 0);
    rearm(b, s);
    if (s->tls != NULL && to == UPSTREAM && s->active) /* the rest of what the BIO holds */
        tls_decrypt(b, s);
}

/* Tell each splice's owner what happened, in order, now that the batch is done. The first
 * exception is raised once all are told; any others are reported as unraisable. */
static PyObject *deliver(Batch *b)
{
    PyObject *type = NULL, *value = NULL, *trace = NULL;
    for (int i = 0; i < b->count; i++) {
        Notice *n = &b->notices[i];
        PyObject *callback = n->splice->on_event;
        if (callback != NULL) { /* NULL: stopped by an earlier notice's callback */
            Py_INCREF(callback);
            PyObject *r = PyObject_CallFunction(callback, "iii", n->kind, n->side, n->error);
            if (r != NULL)
                Py_DECREF(r);
            else if (type == NULL)
                PyErr_Fetch(&type, &value, &trace);
            else
                PyErr_WriteUnraisable(callback);
            Py_DECREF(callback);
        }
        Py_DECREF(n->splice);
    }
    b->count = 0;
    if (type != NULL) {
        PyErr_Restore(type, value, trace);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *core_poll(Core *core, PyObject *Py_UNUSED(ignored))
{
    struct epoll_event events[BATCH];
    Batch batch;
    if (core->epfd < 0)
        Py_RETURN_NONE;
    int count = epoll_wait(core->epfd, events, BATCH, 0);
    if (count < 0) {
        if (errno == EINTR)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    batch.count = 0;
    for (int i = 0; i < count; i++) {
        if (batch.count > BATCH * PER_EVENT - PER_EVENT)
            break; /* cannot happen (PER_EVENT); the rest stay ready (level-triggered) */
        Splice *s = (Splice *)(uintptr_t)(events[i].data.u64 & ~(uint64_t)1);
        int side = (int)(events[i].data.u64 & 1);
        uint32_t ev = events[i].events;
        if (!s->active) /* halted earlier in this batch */
            continue;
        if (ev & EPOLLERR) { /* not read here: the transport reads the error itself */
            halt(&batch, s, WAKE, side, 0);
            continue;
        }
        if (ev & EPOLLOUT)
            flush(&batch, s, side);
        if (!s->active)
            continue;
        if (s->kept[side].data == NULL && (ev & (EPOLLIN | EPOLLHUP)))
            pump(&batch, s, side);
        else if (ev & EPOLLHUP) /* reported even when not asked for: do not spin on it */
            halt(&batch, s, WAKE, side, 0);
    }
    return deliver(&batch);
}

/* -- Core ----------------------------------------------------------------------------- */

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":Core", kwlist))
        return NULL;
    Core *core = (Core *)type->tp_alloc(type, 0);
    if (core == NULL)
        return NULL;
    core->epfd = -1;
    core->buf = PyMem_RawMalloc(CHUNK);
    if (core->buf == NULL) {
        Py_DECREF(core);
        return PyErr_NoMemory();
    }
    core->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (core->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(core);
        return NULL;
    }
    return (PyObject *)core;
}

static PyObject *core_close(Core *core, PyObject *Py_UNUSED(ignored))
{
    if (core->members > 0) {
        PyErr_SetString(PyExc_RuntimeError, "Core.close() while splices are running");
        return NULL;
    }
    if (core->epfd >= 0) {
        close(core->epfd);
        core->epfd = -1;
    }
    Py_RETURN_NONE;
}

static void core_dealloc(Core *core)
{
    /* Every Splice holds its Core while running: members is 0 here. */
    if (core->epfd >= 0)
        close(core->epfd);
    PyMem_RawFree(core->buf);
    Py_TYPE(core)->tp_free((PyObject *)core);
}

static PyObject *core_fileno(Core *core, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(core->epfd);
}

static PyMethodDef core_methods[] = {
    {"poll", (PyCFunction)core_poll, METH_NOARGS,
     "Serve every ready socket (one batch), then tell the splices' owners what happened."},
    {"fileno", (PyCFunction)core_fileno, METH_NOARGS, "The epoll fd the loop watches."},
    {"close", (PyCFunction)core_close, METH_NOARGS, "Close the epoll fd (no splice left)."},
    {NULL}};

static PyMemberDef core_members[] = {
    {"members", T_PYSSIZET, offsetof(Core, members), READONLY, "Splices running."},
    {NULL}};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wsgate.proxy._splice.Core",
    .tp_doc = "One epoll set of spliced sockets, served from one event loop.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* -- Splice --------------------------------------------------------------------------- */

static int add_fd(Splice *s, int side)
{
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = (uint64_t)(uintptr_t)s | (uint64_t)side;
    if (epoll_ctl(s->core->epfd, EPOLL_CTL_ADD, s->fd[side], &ev) < 0)
        return -1;
    s->armed[side] = EPOLLIN;
    return 0;
}

static PyObject *splice_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"core", "client_fd", "upstream_fd", "on_event", "left", "held",
                             "closed", "tls", NULL};
    Core *core;
    int client_fd, upstream_fd, closed;
    PyObject *on_event, *left_arg, *tls = Py_None;
    unsigned long long left;
    Py_buffer held;
    u128 end;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iiOO!y*p|O:Splice", kwlist,
                                     &CoreType, &core, &client_fd, &upstream_fd, &on_event,
                                     &PyLong_Type, &left_arg, &held, &closed, &tls))
        return NULL;
    left = PyLong_AsUnsignedLongLong(left_arg); /* OverflowError past 64 bits: not here */
    if (left == (unsigned long long)-1 && PyErr_Occurred()) {
        PyBuffer_Release(&held);
        return NULL;
    }
    if (held.len > MAX_HELD || (held.len && left) ||
        header_end(held.buf, (size_t)held.len, &end)) {
        PyBuffer_Release(&held);
        PyErr_SetString(PyExc_ValueError, "not a cursor frames.Cursor can be in");
        return NULL;
    }
    if (client_fd < 0 || upstream_fd < 0 || client_fd == upstream_fd || core->epfd < 0 ||
        !PyCallable_Check(on_event) ||
        (tls != Py_None && !(PyTuple_Check(tls) && PyTuple_GET_SIZE(tls) == 2))) {
        PyBuffer_Release(&held);
        PyErr_SetString(PyExc_ValueError,
                        "two distinct fds, an open Core, a callable, tls None or a pair");
        return NULL;
    }
    Tls *session = NULL;
    if (tls != Py_None &&
        (session = tls_attach(PyTuple_GET_ITEM(tls, 0), PyTuple_GET_ITEM(tls, 1),
                               client_fd)) == NULL) {
        PyBuffer_Release(&held);
        return NULL;
    }
    Splice *s = (Splice *)type->tp_alloc(type, 0);
    if (s == NULL) {
        tls_free(session);
        PyBuffer_Release(&held);
        return NULL;
    }
    s->tls = session;
    s->fd[CLIENT] = client_fd;
    s->fd[UPSTREAM] = upstream_fd;
    s->cursor.left = left;
    s->cursor.nheld = (int)held.len;
    memcpy(s->cursor.held, held.buf, (size_t)held.len);
    s->cursor.closed = closed;
    PyBuffer_Release(&held);
    Py_INCREF(core);
    s->core = core;
    core->members++;
    if (add_fd(s, CLIENT) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(s);
        return NULL;
    }
    if (add_fd(s, UPSTREAM) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        epoll_ctl(core->epfd, EPOLL_CTL_DEL, client_fd, NULL);
        Py_DECREF(s);
        return NULL;
    }
    s->active = 1;
    Py_INCREF(on_event);
    s->on_event = on_event;
    return (PyObject *)s;
}

static PyObject *kept_bytes(Kept *k)
{
    PyObject *data = PyBytes_FromStringAndSize(k->data ? k->data + k->off : "",
                                               (Py_ssize_t)(k->len - k->off));
    PyMem_RawFree(k->data);
    k->data = NULL;
    k->off = k->len = 0;
    return data;
}

/* Leave the epoll set and the Core; after this the object only answers questions. */
static void splice_release(Splice *s)
{
    if (s->core == NULL)
        return;
    unregister(s);
    s->core->members--;
    Py_CLEAR(s->core);
    Py_CLEAR(s->on_event);
}

static PyObject *splice_stop(Splice *s, PyObject *Py_UNUSED(ignored))
{
    splice_release(s);
    if (s->tls != NULL)
        tls_take_out(s);
    PyObject *to_client = kept_bytes(&s->kept[UPSTREAM]);
    PyObject *to_upstream = kept_bytes(&s->kept[CLIENT]);
    if (to_client == NULL || to_upstream == NULL) {
        Py_XDECREF(to_client);
        Py_XDECREF(to_upstream);
        return NULL;
    }
    return Py_BuildValue("(NN)", to_client, to_upstream);
}

static int splice_traverse(Splice *s, visitproc visit, void *arg)
{
    Py_VISIT(s->on_event);
    Py_VISIT(s->core);
    return 0;
}

static int splice_clear(Splice *s)
{
    splice_release(s);
    return 0;
}

static void splice_dealloc(Splice *s)
{
    PyObject_GC_UnTrack(s);
    splice_release(s);
    for (int side = 0; side < 2; side++)
        PyMem_RawFree(s->kept[side].data);
    tls_free(s->tls);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *u128_to_long(u128 value)
{
    if (value <= ULLONG_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)value);
    PyObject *high = PyLong_FromUnsignedLongLong((unsigned long long)(value >> 64));
    PyObject *low = PyLong_FromUnsignedLongLong((unsigned long long)value);
    PyObject *shift = PyLong_FromLong(64), *shifted = NULL, *result = NULL;
    if (high && low && shift && (shifted = PyNumber_Lshift(high, shift)))
        result = PyNumber_Or(shifted, low);
    Py_XDECREF(high);
    Py_XDECREF(low);
    Py_XDECREF(shift);
    Py_XDECREF(shifted);
    return result;
}

static PyObject *splice_left(Splice *s, void *Py_UNUSED(closure))
{
    return u128_to_long(s->cursor.left);
}

static PyObject *splice_held(Splice *s, void *Py_UNUSED(closure))
{
    return PyBytes_FromStringAndSize((const char *)s->cursor.held, s->cursor.nheld);
}

static PyObject *splice_closed(Splice *s, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(s->cursor.closed);
}

static PyObject *splice_pending(Splice *s, void *Py_UNUSED(closure))
{
    size_t total = 0;
    for (int side = 0; side < 2; side++)
        total += s->kept[side].len - s->kept[side].off;
    return PyLong_FromSize_t(total);
}

static PyObject *splice_running(Splice *s, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(s->active);
}

static PyObject *splice_tls_closed(Splice *s, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(s->tls != NULL && tls_closed(s->tls));
}

static PyGetSetDef splice_getset[] = {
    {"left", (getter)splice_left, NULL, "frames.Cursor.left of the upstream's bytes.", NULL},
    {"held", (getter)splice_held, NULL, "frames.Cursor.held.", NULL},
    {"closed", (getter)splice_closed, NULL, "frames.Cursor.closed.", NULL},
    {"pending", (getter)splice_pending, NULL, "Bytes read but not yet sent on.", NULL},
    {"running", (getter)splice_running, NULL, "Whether its sockets are still served.", NULL},
    {"tls_closed", (getter)splice_tls_closed, NULL,
     "Whether the client's close_notify came (read by the core: the loop never sees it).",
     NULL},
    {NULL}};

static PyMemberDef splice_members[] = {
    {"client_received", T_ULONGLONG, offsetof(Splice, received[CLIENT]), READONLY,
     "Bytes read from the client since the splice began."},
    {"upstream_received", T_ULONGLONG, offsetof(Splice, received[UPSTREAM]), READONLY,
     "Bytes read from the upstream since the splice began."},
    {NULL}};

static PyMethodDef splice_methods[] = {
    {"stop", (PyCFunction)splice_stop, METH_NOARGS,
     "Stop serving both sockets; returns the bytes kept (to_client, to_upstream)."},
    {NULL}};

static PyTypeObject SpliceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "wsgate.proxy._splice.Splice",
    .tp_doc = "A client and an upstream socket joined in C until stop().",
    .tp_basicsize = sizeof(Splice),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = splice_new,
    .tp_dealloc = (destructor)splice_dealloc,
    .tp_traverse = (traverseproc)splice_traverse,
    .tp_clear = (inquiry)splice_clear,
    .tp_methods = splice_methods,
    .tp_members = splice_members,
    .tp_getset = splice_getset,
};

/* -- module --------------------------------------------------------------------------- */

static PyObject *cursor_advance(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *left_arg;
    unsigned long long left;
    Py_buffer held, data;
    int closed;
    u128 end;
    Cursor c;
    if (!PyArg_ParseTuple(args, "O!y*py*:advance", &PyLong_Type, &left_arg, &held, &closed,
                          &data))
        return NULL;
    left = PyLong_AsUnsignedLongLong(left_arg);
    if (left == (unsigned long long)-1 && PyErr_Occurred()) {
        PyBuffer_Release(&held);
        PyBuffer_Release(&data);
        return NULL;
    }
    int bad = held.len > MAX_HELD || (held.len && left) ||
              header_end(held.buf, (size_t)held.len, &end);
    if (!bad) {
        c.left = left;
        c.nheld = (int)held.len;
        memcpy(c.held, held.buf, (size_t)held.len);
        c.closed = closed;
        if (data.len)
            advance(&c, data.buf, (size_t)data.len);
    }
    PyBuffer_Release(&held);
    PyBuffer_Release(&data);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "not a cursor frames.Cursor can be in");
        return NULL;
    }
    PyObject *left_now = u128_to_long(c.left);
    if (left_now == NULL)
        return NULL;
    return Py_BuildValue("(Ny#O)", left_now, (const char *)c.held, (Py_ssize_t)c.nheld,
                         c.closed ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"tls_bind", tls_bind, METH_O,
     "tls_bind(path) -> bool: use the OpenSSL that the module at path (_ssl) links."},
    {"advance", cursor_advance, METH_VARARGS,
     "advance(left, held, closed, data) -> (left, held, closed): the C cursor, for tests."},
    {NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wsgate.proxy._splice",
    "The steady state of plain-TCP tunnels in C (see wsgate.proxy.splice).", -1,
    module_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__splice(void)
{
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&SpliceType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CoreType);
    Py_INCREF(&SpliceType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObject(m, "Splice", (PyObject *)&SpliceType) < 0 ||
        PyModule_AddIntConstant(m, "CLIENT", CLIENT) < 0 ||
        PyModule_AddIntConstant(m, "UPSTREAM", UPSTREAM) < 0 ||
        PyModule_AddIntConstant(m, "WAKE", WAKE) < 0 ||
        PyModule_AddIntConstant(m, "FAILED", FAILED) < 0 ||
        PyModule_AddIntConstant(m, "STALLED", STALLED) < 0 ||
        PyModule_AddIntConstant(m, "FLOWING", FLOWING) < 0 ||
        PyModule_AddIntConstant(m, "CHUNK", CHUNK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

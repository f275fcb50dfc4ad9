/* The C core's TLS side: a wss:// client's tunnel served without Python per record.
 *
 * uvloop runs TLS through OpenSSL memory BIOs: it reads the socket's ciphertext into the
 * session's read BIO and sends what the session writes into its write BIO. After the
 * handshake the core takes those same three objects (the SSL and its two BIOs) for as
 * long as it serves the tunnel: it reads the client's socket into the read BIO, decrypts
 * with SSL_read and sends the plaintext upstream; it encrypts the upstream's bytes with
 * SSL_write and sends the write BIO's ciphertext to the client. Nothing else touches the
 * session meanwhile (uvloop's reading is paused and its buffers empty), and when the core
 * stops, uvloop goes on with the very session it handed over: no state is copied.
 *
 * OpenSSL is the one Python's own _ssl module links (tls_bind finds it through that
 * module, so there is no second OpenSSL and nothing to build against). The SSL pointer is
 * read from _ssl's session object, whose layout is private: tls_attach trusts it only if
 * it points back at the session's own context object and that context's SSL_CTX, and if
 * both BIOs are memory BIOs; otherwise the tunnel stays in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "_splice.h"

#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_ZERO_RETURN 6
#define BIO_TYPE_MEM (1 | 0x0400)

struct Tls {
    PyObject *session; /* _ssl._SSLSocket: keeps the SSL alive */
    void *ssl, *rbio, *wbio;
    int closed;        /* the client's close_notify was read */
};

/* _ssl.c's objects, as far as they are read here (checked before use: tls_attach). */
typedef struct {
    PyObject_HEAD
    PyObject *socket;
    void *ssl;
    PyObject *context;
} SessionHead;

typedef struct {
    PyObject_HEAD
    void *ssl_ctx;
} ContextHead;

static struct {
    int bound;
    int (*SSL_read)(void *, void *, int);
    int (*SSL_write)(void *, const void *, int);
    int (*SSL_get_error)(const void *, int);
    int (*SSL_pending)(const void *);
    int (*SSL_is_init_finished)(const void *);
    void *(*SSL_get_rbio)(const void *);
    void *(*SSL_get_wbio)(const void *);
    void *(*SSL_get_SSL_CTX)(const void *);
    int (*BIO_read)(void *, void *, int);
    int (*BIO_write)(void *, const void *, int);
    size_t (*BIO_ctrl_pending)(void *);
    int (*BIO_method_type)(const void *);
    void (*ERR_clear_error)(void);
} ossl;

PyObject *tls_bind(PyObject *Py_UNUSED(module), PyObject *path)
{
    if (ossl.bound)
        Py_RETURN_TRUE;
    PyObject *bytes;
    if (!PyUnicode_FSConverter(path, &bytes))
        return NULL;
    void *lib = dlopen(PyBytes_AS_STRING(bytes), RTLD_LAZY | RTLD_NOLOAD);
    Py_DECREF(bytes);
    if (lib == NULL)
        Py_RETURN_FALSE;
    /* dlsym on a library's handle also searches what it links: libssl, libcrypto. */
#define FIND(name) (*(void **)&ossl.name = dlsym(lib, #name)) != NULL
    int found = FIND(SSL_read) && FIND(SSL_write) && FIND(SSL_get_error) &&
                FIND(SSL_pending) && FIND(SSL_is_init_finished) && FIND(SSL_get_rbio) &&
                FIND(SSL_get_wbio) && FIND(SSL_get_SSL_CTX) && FIND(BIO_read) &&
                FIND(BIO_write) && FIND(BIO_ctrl_pending) && FIND(BIO_method_type) &&
                FIND(ERR_clear_error);
#undef FIND
    /* The handle stays open: _ssl holds the library anyway, and the pointers need it. */
    ossl.bound = found;
    return PyBool_FromLong(found);
}

/* What the session wrote and uvloop has not sent yet (its TLS 1.3 tickets: uvloop sends
 * them with the first write after the handshake) goes to the client's socket now, as
 * uvloop would send it (its transport's own buffer is empty). Returns whether all went;
 * what did not goes back into the emptied BIO, in order, for uvloop. */
static int send_unsent(int fd, void *wbio)
{
    char buf[8192];
    size_t pending = ossl.BIO_ctrl_pending(wbio);
    if (pending == 0)
        return 1;
    if (pending > sizeof buf)
        return 0;
    int n = ossl.BIO_read(wbio, buf, (int)pending);
    if (n <= 0)
        return 0;
    ssize_t sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    size_t done = sent < 0 ? 0 : (size_t)sent;
    if (done < (size_t)n)
        ossl.BIO_write(wbio, buf + done, (int)((size_t)n - done));
    return done == (size_t)n;
}

Tls *tls_attach(PyObject *session, PyObject *context, int fd)
{
    if (!ossl.bound) {
        PyErr_SetString(PyExc_ValueError, "no OpenSSL bound (tls_bind)");
        return NULL;
    }
    SessionHead *head = (SessionHead *)session;
    if (strcmp(Py_TYPE(session)->tp_name, "_ssl._SSLSocket") != 0 ||
        head->context != context || head->ssl == NULL ||
        ossl.SSL_get_SSL_CTX(head->ssl) != ((ContextHead *)context)->ssl_ctx) {
        PyErr_SetString(PyExc_ValueError, "not an _ssl session this core knows");
        return NULL;
    }
    void *ssl = head->ssl, *rbio = ossl.SSL_get_rbio(ssl), *wbio = ossl.SSL_get_wbio(ssl);
    if (rbio == NULL || wbio == NULL || ossl.BIO_method_type(rbio) != BIO_TYPE_MEM ||
        ossl.BIO_method_type(wbio) != BIO_TYPE_MEM || !ossl.SSL_is_init_finished(ssl)) {
        PyErr_SetString(PyExc_ValueError, "not a finished TLS session on memory BIOs");
        return NULL;
    }
    if (ossl.SSL_pending(ssl) || ossl.BIO_ctrl_pending(rbio) || !send_unsent(fd, wbio)) {
        PyErr_SetString(PyExc_ValueError, "the TLS session has bytes buffered");
        return NULL;
    }
    Tls *tls = PyMem_RawCalloc(1, sizeof(Tls));
    if (tls == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_INCREF(session);
    tls->session = session;
    tls->ssl = ssl;
    tls->rbio = rbio;
    tls->wbio = wbio;
    return tls;
}

void tls_free(Tls *tls)
{
    if (tls == NULL)
        return;
    Py_XDECREF(tls->session);
    PyMem_RawFree(tls);
}

int tls_closed(const Tls *tls) { return tls->closed; }

/* Send what the session wrote to the client; what the socket cannot take, or all of it
 * behind bytes already kept for the client, is kept. */
static void flush_records(Batch *b, Splice *s)
{
    char *buf = s->core->buf;
    size_t pending;
    while (s->active && (pending = ossl.BIO_ctrl_pending(s->tls->wbio)) > 0) {
        int n = ossl.BIO_read(s->tls->wbio, buf, pending < CHUNK ? (int)pending : CHUNK);
        if (n <= 0) {
            halt(b, s, FAILED, CLIENT, EIO);
            return;
        }
        ssize_t sent = 0;
        if (s->kept[UPSTREAM].data == NULL && (sent = send_some(b, s, CLIENT, buf, (size_t)n)) < 0)
            return;
        if (sent < n && keep(b, s, UPSTREAM, buf + sent, (size_t)(n - sent)) < 0)
            return;
    }
}

/* Decrypt what the read BIO holds and send it upstream, until the BIO is empty or the
 * upstream stops taking (the rest stays in the BIO: flush() comes back here). */
void tls_decrypt(Batch *b, Splice *s)
{
    Tls *tls = s->tls;
    char *buf = s->core->buf;
    ossl.ERR_clear_error(); /* SSL_get_error reads the thread's queue: start it empty */
    while (s->active && s->kept[CLIENT].data == NULL) {
        int n = ossl.SSL_read(tls->ssl, buf, CHUNK);
        if (n > 0) {
            s->received[CLIENT] += (unsigned long long)n;
            ssize_t sent = send_some(b, s, UPSTREAM, buf, (size_t)n);
            if (sent < 0 || (sent < n && keep(b, s, CLIENT, buf + sent, (size_t)(n - sent)) < 0))
                return;
            continue;
        }
        int error = ossl.SSL_get_error(tls->ssl, n);
        ossl.ERR_clear_error();
        if (error == SSL_ERROR_WANT_READ)
            break;
        flush_records(b, s); /* an alert the session wrote goes before the loop's turn */
        if (error == SSL_ERROR_ZERO_RETURN) {
            tls->closed = 1;
            halt(b, s, WAKE, CLIENT, 0);
        } else {
            halt(b, s, FAILED, CLIENT, EPROTO);
        }
        return;
    }
    flush_records(b, s); /* what reading wrote (OpenSSL may answer a handshake message) */
}

/* The client's socket is readable: its records go into the session's read BIO. */
void tls_pump_in(Batch *b, Splice *s)
{
    char *buf = s->core->buf;
    ssize_t n = recv(s->fd[CLIENT], buf, CHUNK, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            halt(b, s, FAILED, CLIENT, errno);
        return;
    }
    if (n == 0) { /* EOF: not consumed, uvloop's transport will read it again */
        halt(b, s, WAKE, CLIENT, 0);
        return;
    }
    if (ossl.BIO_write(s->tls->rbio, buf, (int)n) != (int)n) {
        halt(b, s, FAILED, CLIENT, ENOMEM);
        return;
    }
    tls_decrypt(b, s);
}

/* The upstream's bytes (at most TLS_PLAIN), encrypted for the client. */
void tls_pump_out(Batch *b, Splice *s, const char *plain, size_t len)
{
    ossl.ERR_clear_error();
    for (size_t done = 0; done < len;) {
        int n = ossl.SSL_write(s->tls->ssl, plain + done, (int)(len - done));
        if (n <= 0) {
            ossl.ERR_clear_error();
            halt(b, s, FAILED, CLIENT, EPROTO);
            return;
        }
        done += (size_t)n;
    }
    flush_records(b, s);
}

/* At stop(): whatever the session still holds for the client goes behind the kept bytes,
 * for the loop to write to the client's socket itself. Without the memory for that, it
 * stays in the BIO, behind them still: uvloop sends it with its next write or shutdown. */
void tls_take_out(Splice *s)
{
    Kept *k = &s->kept[UPSTREAM];
    size_t pending;
    while ((pending = ossl.BIO_ctrl_pending(s->tls->wbio)) > 0) {
        char *grown = PyMem_RawRealloc(k->data, k->len + pending);
        if (grown == NULL)
            break;
        k->data = grown;
        int n = ossl.BIO_read(s->tls->wbio, k->data + k->len, (int)pending);
        if (n <= 0)
            break;
        k->len += (size_t)n;
    }
}

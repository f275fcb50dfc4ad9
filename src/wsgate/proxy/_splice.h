/* What _splice.c (the core) and _splice_tls.c (its TLS side) share. */
#ifndef WSGATE_SPLICE_H
#define WSGATE_SPLICE_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CHUNK 65536 /* one read; also the bound on bytes kept per direction */
#define BATCH 128   /* events per poll(); the rest wait for the next loop iteration */
#define MAX_HELD 13 /* frames.Cursor: a cut header is shorter than 14 bytes */
#define PER_EVENT 4 /* notices one event can make, at most: see Batch */
/* An upstream read for a TLS client: with what its records add (4 of them, 2 KiB at
 * most), they fit in CHUNK. */
#define TLS_PLAIN (CHUNK - 2048)

enum { CLIENT = 0, UPSTREAM = 1 };
enum { WAKE = 0, FAILED = 1, STALLED = 2, FLOWING = 3 };

typedef unsigned __int128 u128; /* a 64-bit length plus a header cannot overflow it */

typedef struct {
    PyObject_HEAD
    int epfd;
    Py_ssize_t members;
    char *buf;
} Core;

typedef struct {
    char *data;
    size_t off, len;
} Kept;

typedef struct {
    u128 left;
    unsigned char held[16];
    int nheld;
    int closed;
} Cursor;

typedef struct Tls Tls; /* _splice_tls.c: the client's TLS session, where it has one */

typedef struct {
    PyObject_HEAD
    Core *core;          /* NULL once stopped */
    PyObject *on_event;  /* NULL once stopped */
    int fd[2];
    int active;          /* in the epoll set */
    uint32_t armed[2];   /* the events each fd is polled for */
    unsigned long long received[2]; /* the client's: plaintext, where it speaks TLS */
    Kept kept[2];        /* kept[s]: read from side s, not yet sent to the other (to a
                            TLS client: its ciphertext) */
    Cursor cursor;       /* of the bytes read from the upstream */
    Tls *tls;            /* NULL: the client's socket is plain TCP */
} Splice;

typedef struct {
    Splice *splice; /* a new reference */
    int kind, side, error;
} Notice;

typedef struct {
    /* Per event, at most: FLOWING, STALLED (a TLS client's records still buffered, sent on
     * after the flush), STALLED the other way, and a halt (poll() checks the room). */
    Notice notices[BATCH * PER_EVENT];
    int count;
} Batch;

/* _splice.c, for _splice_tls.c */
void notice(Batch *b, Splice *s, int kind, int side, int error);
void halt(Batch *b, Splice *s, int kind, int side, int error);
ssize_t send_some(Batch *b, Splice *s, int to, const char *data, size_t len);
int keep(Batch *b, Splice *s, int side, const char *data, size_t len);

/* _splice_tls.c, for _splice.c */
PyObject *tls_bind(PyObject *module, PyObject *path);
Tls *tls_attach(PyObject *session, PyObject *context, int fd);
void tls_free(Tls *tls);
void tls_pump_in(Batch *b, Splice *s);
void tls_decrypt(Batch *b, Splice *s);
void tls_pump_out(Batch *b, Splice *s, const char *plain, size_t len);
void tls_take_out(Splice *s);
int tls_closed(const Tls *tls);

#endif
